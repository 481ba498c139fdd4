/* PENDING */
#include "isa_kernels.h"

void whet_gemm_bf16_neonbf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    whet_gemm_bf16_scalar(g, m0, m1, n0, n1, workspace);
}
