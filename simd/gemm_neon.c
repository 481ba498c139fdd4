/* PENDING: forwards to the scalar reference until the neon kernels land. */
#include "isa_kernels.h"

const whet_gemm_params whet_gemm_params_neon = {.workspace_bytes = 0, .tile_m = 4, .tile_n = 4};
void whet_sgemm_neon(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    whet_sgemm_scalar(g, m0, m1, n0, n1, workspace);
}

void whet_gemm_bf16_neon(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    whet_gemm_bf16_scalar(g, m0, m1, n0, n1, workspace);
}
