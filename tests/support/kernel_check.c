#include "kernel_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const size_t kc_sizes[] = {1, 3, 7, 17, 33, 127, 257, 4099};
const size_t kc_nsizes = sizeof kc_sizes / sizeof kc_sizes[0];

int kc_tables(const whet_kernels *tables[WHET_ISA_COUNT])
{
    int n = 0;
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++) {
        const whet_kernels *k = whet_kernels_for((whet_isa)isa);
        if (k)
            tables[n++] = k;
    }
    return n;
}

void kc_print_tables(void)
{
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    printf("tables:");
    for (int t = 0; t < nt; t++)
        printf(" %s", tables[t]->name);
    printf("\n");
}

kc_rng kc_seed(uint64_t seed)
{
    kc_rng r = {seed * 0x9e3779b97f4a7c15ull + 1};
    return r;
}

uint64_t kc_next(kc_rng *r)
{
    uint64_t x = r->state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->state = x;
    return x;
}

float kc_uniform(kc_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((kc_next(r) >> 40) * (1.0 / 16777216.0));
}

void kc_fill(kc_rng *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = kc_uniform(r, lo, hi);
}

float *kc_floats(size_t n)
{
    size_t bytes = (n + 1) * sizeof(float) + 64 + sizeof(void *);
    char *base = calloc(1, bytes);
    if (!base)
        abort();
    /* 64-byte aligned after room for the base pointer, then one float on, so the
     * buffer is misaligned for every vector width */
    uintptr_t aligned = ((uintptr_t)base + sizeof(void *) + 63) & ~(uintptr_t)63;
    memcpy((void *)(aligned - sizeof(void *)), &base, sizeof base);
    return (float *)aligned + 1;
}

void kc_free(void *p)
{
    if (!p)
        return;
    uintptr_t aligned = (uintptr_t)((float *)p - 1);
    char *base;
    memcpy(&base, (void *)(aligned - sizeof(void *)), sizeof base);
    free(base);
}

static uint32_t ordered_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    /* map the float line onto unsigned integers in order */
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

uint32_t kc_ulps(float a, float b)
{
    if (isnan(a) || isnan(b))
        return (isnan(a) && isnan(b)) ? 0 : UINT32_MAX;
    uint32_t x = ordered_bits(a), y = ordered_bits(b);
    return x > y ? x - y : y - x;
}

double kc_ulp_error(float got, double ref)
{
    if (isnan(ref) || isnan(got))
        return (isnan(ref) && isnan(got)) ? 0 : INFINITY;
    if (isinf(ref))
        return (double)got == ref ? 0 : INFINITY;
    int exponent;
    frexp(ref, &exponent);
    /* ulp of a float with ref's exponent; subnormals have the fixed 2^-149 */
    double ulp = ldexp(1.0, (exponent - 24 < -149) ? -149 : exponent - 24);
    return fabs((double)got - ref) / ulp;
}
