/* The dispatcher: detection is consistent, every table is complete, WHET_ISA
 * forces a level and refuses one the CPU lacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "simd/simd.h"
#include "util/compute.h"

#include <stdlib.h>
#include <string.h>

static void every_table_is_complete(void **state)
{
    (void)state;
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++) {
        const whet_kernels *k = whet_kernels_for((whet_isa)isa);
        if (!k)
            continue;
        assert_int_equal(k->isa, isa);
        assert_string_equal(k->name, whet_isa_name((whet_isa)isa));
        assert_non_null(k->gemm_bf16_kind);
        assert_true(k->gemm_tile_m >= 1 && k->gemm_tile_n >= 1);
#define CHECK_ENTRY(ret, name, params) assert_non_null(k->name);
        WHET_KERNEL_LIST(CHECK_ENTRY)
#undef CHECK_ENTRY
    }
}

static void scalar_always_available_and_best_is_highest(void **state)
{
    (void)state;
    assert_non_null(whet_kernels_for(WHET_ISA_SCALAR));
    const whet_kernels *best = whet_kernels_best();
    for (int isa = best->isa + 1; isa < WHET_ISA_COUNT; isa++)
        assert_null(whet_kernels_for((whet_isa)isa));
}

static void features_imply_levels(void **state)
{
    (void)state;
    const whet_cpu_features *f = whet_cpu_detect();
#if defined(__x86_64__)
    assert_string_equal(f->arch, "x86_64");
    /* AVX-512 without AVX2 would be a detection bug */
    if (f->avx512f)
        assert_true(f->avx2 && f->fma);
    assert_int_equal(whet_kernels_for(WHET_ISA_AVX2) != NULL, f->avx2 && f->fma && f->f16c);
    assert_int_equal(whet_kernels_for(WHET_ISA_AVX512) != NULL,
                     f->avx2 && f->fma && f->f16c && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq);
    assert_null(whet_kernels_for(WHET_ISA_NEON));
    if (whet_kernels_for(WHET_ISA_AVX512))
        assert_string_equal(whet_kernels_for(WHET_ISA_AVX512)->gemm_bf16_kind,
                            f->avx512_bf16 ? "vdpbf16ps" : "convert");
#elif defined(__aarch64__)
    assert_string_equal(f->arch, "aarch64");
    assert_true(f->asimd);
    assert_non_null(whet_kernels_for(WHET_ISA_NEON));
    assert_null(whet_kernels_for(WHET_ISA_AVX2));
    assert_string_equal(whet_kernels_for(WHET_ISA_NEON)->gemm_bf16_kind, f->arm_bf16 ? "bfdot" : "convert");
#endif
}

static void isa_names_round_trip(void **state)
{
    (void)state;
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++)
        assert_int_equal(whet_isa_from_name(whet_isa_name((whet_isa)isa)), isa);
    assert_int_equal(whet_isa_from_name("sse9"), -1);
    assert_int_equal(whet_isa_from_name(""), -1);
    assert_null(whet_kernels_for((whet_isa)WHET_ISA_COUNT));
    assert_null(whet_kernels_for((whet_isa)-1));
}

static void env_forces_each_available_level(void **state)
{
    (void)state;
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++) {
        setenv("WHET_ISA", whet_isa_name((whet_isa)isa), 1);
        const whet_kernels *k = whet_kernels_from_env();
        if (whet_kernels_for((whet_isa)isa))
            assert_ptr_equal(k, whet_kernels_for((whet_isa)isa));
        else
            assert_null(k); /* refused, with a message, never a crash later */
    }
    setenv("WHET_ISA", "avx1024", 1);
    assert_null(whet_kernels_from_env());
    unsetenv("WHET_ISA");
    assert_ptr_equal(whet_kernels_from_env(), whet_kernels_best());
    setenv("WHET_ISA", "", 1);
    assert_ptr_equal(whet_kernels_from_env(), whet_kernels_best());
    unsetenv("WHET_ISA");
}


int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_table_is_complete),
        cmocka_unit_test(scalar_always_available_and_best_is_highest),
        cmocka_unit_test(features_imply_levels),
        cmocka_unit_test(isa_names_round_trip),
        cmocka_unit_test(env_forces_each_available_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
