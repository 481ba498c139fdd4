/* Shared by the kernel tests: the ISAs to test, odd shapes, seeded random
 * data, and error measures (ULPs, GEMM-style bounds). */
#ifndef WHET_KERNEL_CHECK_H
#define WHET_KERNEL_CHECK_H

#include "simd/simd.h"

#include <stddef.h>
#include <stdint.h>

/* The odd shapes every kernel is tested on, the last one large. */
extern const size_t kc_sizes[];
extern const size_t kc_nsizes;

/* Every ISA table this build and CPU can run, scalar first; returns the count. */
int kc_tables(const whet_kernels *tables[WHET_ISA_COUNT]);
/* Prints "tables: scalar avx2 ..." (what a test binary covers on this machine). */
void kc_print_tables(void);

/* Deterministic xorshift generator. */
typedef struct {
    uint64_t state;
} kc_rng;
kc_rng kc_seed(uint64_t seed);
uint64_t kc_next(kc_rng *r);
float kc_uniform(kc_rng *r, float lo, float hi);
void kc_fill(kc_rng *r, float *x, size_t n, float lo, float hi);

/* A float buffer deliberately misaligned by one float (kernels must not assume
 * alignment); free with kc_free. */
float *kc_floats(size_t n);
void kc_free(void *p);

/* Distance between two floats in units in the last place (0 when equal, huge
 * when the signs differ or one is NaN). */
uint32_t kc_ulps(float a, float b);
/* The ULP error of float `got` against a double reference: |got − ref| / ulp(ref). */
double kc_ulp_error(float got, double ref);

#endif
