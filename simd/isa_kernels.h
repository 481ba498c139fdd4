/* Private to simd/: the per-ISA symbols the dispatcher puts in its tables.
 * Every ISA file defines whet_<kernel>_<isa> for each entry of WHET_KERNEL_LIST
 * and a whet_gemm_params_<isa>. Helpers shared inside one ISA file must be
 * `static`, so that no code compiled with ISA flags leaks into another file. */
#ifndef WHET_ISA_KERNELS_H
#define WHET_ISA_KERNELS_H

#include "simd.h"

typedef struct whet_gemm_params {
    size_t workspace_bytes; /* for sgemm and gemm_bf16 alike */
    size_t tile_m, tile_n;
} whet_gemm_params;

#define WHET_DECLARE_SCALAR(ret, name, params) ret whet_##name##_scalar params;
#define WHET_DECLARE_AVX2(ret, name, params) ret whet_##name##_avx2 params;
#define WHET_DECLARE_AVX512(ret, name, params) ret whet_##name##_avx512 params;
#define WHET_DECLARE_NEON(ret, name, params) ret whet_##name##_neon params;

WHET_KERNEL_LIST(WHET_DECLARE_SCALAR)
extern const whet_gemm_params whet_gemm_params_scalar;

#if defined(__x86_64__)
WHET_KERNEL_LIST(WHET_DECLARE_AVX2)
WHET_KERNEL_LIST(WHET_DECLARE_AVX512)
extern const whet_gemm_params whet_gemm_params_avx2;
extern const whet_gemm_params whet_gemm_params_avx512;
/* gemm_bf16 on vdpbf16ps, from gemm_avx512bf16.c; used when the CPU has AVX512_BF16 */
void whet_gemm_bf16_avx512bf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace);
#endif

#if defined(__aarch64__)
WHET_KERNEL_LIST(WHET_DECLARE_NEON)
extern const whet_gemm_params whet_gemm_params_neon;
/* gemm_bf16 on BFDOT/BFMMLA, from gemm_neonbf16.c; used when the CPU has FEAT_BF16 */
void whet_gemm_bf16_neonbf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace);
#endif

#endif
