/* CPU feature detection and the kernel tables. Compiled for the baseline ISA
 * only: nothing here may execute an instruction the CPU might lack. */
#include "isa_kernels.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#include <sys/prctl.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

static whet_cpu_features detected;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
static unsigned long long read_xcr0(void)
{
    unsigned int eax, edx;
    /* xgetbv spelled as bytes so that old assemblers accept it */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect_x86(whet_cpu_features *f)
{
    unsigned int eax, ebx, ecx, edx;
    strcpy(f->arch, "x86_64");
    f->sse2 = 1; /* part of x86-64 */
    unsigned int max_leaf = (unsigned int)__get_cpuid_max(0, NULL);
    if (max_leaf < 1) /* QEMU may report no leaves at all: stay scalar */
        return;
    __cpuid(1, eax, ebx, ecx, edx);
    int osxsave = (ecx >> 27) & 1;
    int cpu_avx = (ecx >> 28) & 1, cpu_fma = (ecx >> 12) & 1, cpu_f16c = (ecx >> 29) & 1;
    unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
    /* CPUID bits alone are not enough: the OS must save YMM (XCR0 bits 1-2) and,
     * for AVX-512, opmask and ZMM state (bits 5-7) on context switches. */
    int os_ymm = (xcr0 & 0x6) == 0x6;
    int os_zmm = (xcr0 & 0xe6) == 0xe6;
    f->avx = cpu_avx && os_ymm;
    f->fma = cpu_fma && os_ymm;
    f->f16c = cpu_f16c && os_ymm;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        f->avx2 = ((ebx >> 5) & 1) && os_ymm;
        f->avx512f = ((ebx >> 16) & 1) && os_zmm;
        f->avx512dq = ((ebx >> 17) & 1) && os_zmm;
        f->avx512bw = ((ebx >> 30) & 1) && os_zmm;
        f->avx512vl = ((ebx >> 31) & 1) && os_zmm;
        unsigned int sub_leaves = eax;
        if (sub_leaves >= 1) {
            __cpuid_count(7, 1, eax, ebx, ecx, edx);
            f->avx512_bf16 = ((eax >> 5) & 1) && os_zmm;
        }
    }
    /* gcc's cpuid.h returns unsigned int here, clang's int */
    unsigned int max_extended_leaf = (unsigned int)__get_cpuid_max(0x80000000, NULL);
    if (max_extended_leaf >= 0x80000004) {
        unsigned int brand[12];
        for (unsigned int leaf = 0; leaf < 3; leaf++)
            __cpuid(0x80000002 + leaf, brand[4 * leaf], brand[4 * leaf + 1], brand[4 * leaf + 2],
                    brand[4 * leaf + 3]);
        memcpy(f->brand, brand, sizeof brand);
        f->brand[48] = 0;
        /* the brand string is padded with spaces on some CPUs */
        size_t start = 0;
        while (f->brand[start] == ' ')
            start++;
        memmove(f->brand, f->brand + start, strlen(f->brand + start) + 1);
        size_t len = strlen(f->brand);
        while (len && f->brand[len - 1] == ' ')
            f->brand[--len] = 0;
    }
}
#endif

#if defined(__aarch64__)
static void detect_arm(whet_cpu_features *f)
{
    strcpy(f->arch, "aarch64");
    f->asimd = 1; /* Advanced SIMD is mandatory in ARMv8-A */
#if defined(__linux__)
    unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
    /* bit numbers from the kernel's uapi hwcap.h; spelled out for old headers */
    f->asimd_fp16 = (hwcap >> 10) & 1;   /* HWCAP_ASIMDHP */
    f->asimd_dotprod = (hwcap >> 20) & 1; /* HWCAP_ASIMDDP */
    f->sve = (hwcap >> 22) & 1;           /* HWCAP_SVE */
    f->arm_i8mm = (hwcap2 >> 13) & 1;     /* HWCAP2_I8MM */
    f->arm_bf16 = (hwcap2 >> 14) & 1;     /* HWCAP2_BF16 */
#ifndef PR_SVE_GET_VL
#define PR_SVE_GET_VL 51
#endif
    if (f->sve) {
        int vl = prctl(PR_SVE_GET_VL);
        if (vl > 0)
            f->sve_vector_bits = (vl & 0xffff) * 8;
    }
#elif defined(__APPLE__)
    int value = 0;
    size_t size = sizeof value;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, NULL, 0) == 0)
        f->asimd_dotprod = value;
    size = sizeof value, value = 0;
    if (sysctlbyname("hw.optional.arm.FEAT_BF16", &value, &size, NULL, 0) == 0)
        f->arm_bf16 = value;
    size = sizeof value, value = 0;
    if (sysctlbyname("hw.optional.arm.FEAT_I8MM", &value, &size, NULL, 0) == 0)
        f->arm_i8mm = value;
    size = sizeof value, value = 0;
    if (sysctlbyname("hw.optional.arm.FEAT_FP16", &value, &size, NULL, 0) == 0)
        f->asimd_fp16 = value;
    size = sizeof f->brand;
    sysctlbyname("machdep.cpu.brand_string", f->brand, &size, NULL, 0);
#endif
}
#endif

static void detect(void)
{
    memset(&detected, 0, sizeof detected);
    strcpy(detected.arch, "unknown");
#if defined(__x86_64__)
    detect_x86(&detected);
#elif defined(__aarch64__)
    detect_arm(&detected);
#endif
}

const whet_cpu_features *whet_cpu_detect(void)
{
    pthread_once(&detect_once, detect);
    return &detected;
}

#define WHET_TABLE_ENTRY_SCALAR(ret, name, params) .name = whet_##name##_scalar,
#define WHET_TABLE_ENTRY_AVX2(ret, name, params) .name = whet_##name##_avx2,
#define WHET_TABLE_ENTRY_AVX512(ret, name, params) .name = whet_##name##_avx512,
#define WHET_TABLE_ENTRY_NEON(ret, name, params) .name = whet_##name##_neon,

static whet_kernels tables[WHET_ISA_COUNT];
static int table_usable[WHET_ISA_COUNT];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void fill_gemm_params(whet_kernels *k, const whet_gemm_params *p)
{
    k->gemm_workspace_bytes = p->workspace_bytes;
    k->gemm_tile_m = p->tile_m;
    k->gemm_tile_n = p->tile_n;
}

static void build_tables(void)
{
    const whet_cpu_features *f = whet_cpu_detect();

    tables[WHET_ISA_SCALAR] = (whet_kernels){
        .isa = WHET_ISA_SCALAR, .name = "scalar", .gemm_bf16_kind = "convert",
        WHET_KERNEL_LIST(WHET_TABLE_ENTRY_SCALAR)};
    fill_gemm_params(&tables[WHET_ISA_SCALAR], &whet_gemm_params_scalar);
    table_usable[WHET_ISA_SCALAR] = 1;

#if defined(__x86_64__)
    tables[WHET_ISA_AVX2] = (whet_kernels){
        .isa = WHET_ISA_AVX2, .name = "avx2", .gemm_bf16_kind = "convert",
        WHET_KERNEL_LIST(WHET_TABLE_ENTRY_AVX2)};
    fill_gemm_params(&tables[WHET_ISA_AVX2], &whet_gemm_params_avx2);
    table_usable[WHET_ISA_AVX2] = f->avx2 && f->fma && f->f16c;

    tables[WHET_ISA_AVX512] = (whet_kernels){
        .isa = WHET_ISA_AVX512, .name = "avx512", .gemm_bf16_kind = "convert",
        WHET_KERNEL_LIST(WHET_TABLE_ENTRY_AVX512)};
    fill_gemm_params(&tables[WHET_ISA_AVX512], &whet_gemm_params_avx512);
    table_usable[WHET_ISA_AVX512] = table_usable[WHET_ISA_AVX2] && f->avx512f && f->avx512bw &&
                                    f->avx512vl && f->avx512dq;
    if (f->avx512_bf16) {
        tables[WHET_ISA_AVX512].gemm_bf16 = whet_gemm_bf16_avx512bf16;
        tables[WHET_ISA_AVX512].gemm_bf16_kind = "vdpbf16ps";
    }
#endif

#if defined(__aarch64__)
    tables[WHET_ISA_NEON] = (whet_kernels){
        .isa = WHET_ISA_NEON, .name = "neon", .gemm_bf16_kind = "convert",
        WHET_KERNEL_LIST(WHET_TABLE_ENTRY_NEON)};
    fill_gemm_params(&tables[WHET_ISA_NEON], &whet_gemm_params_neon);
    table_usable[WHET_ISA_NEON] = f->asimd;
    if (f->arm_bf16) {
        tables[WHET_ISA_NEON].gemm_bf16 = whet_gemm_bf16_neonbf16;
        tables[WHET_ISA_NEON].gemm_bf16_kind = "bfdot";
    }
#endif
    (void)f;
}

const whet_kernels *whet_kernels_for(whet_isa isa)
{
    if ((int)isa < 0 || isa >= WHET_ISA_COUNT)
        return NULL;
    pthread_once(&tables_once, build_tables);
    return table_usable[isa] ? &tables[isa] : NULL;
}

const whet_kernels *whet_kernels_best(void)
{
    for (int isa = WHET_ISA_COUNT - 1; isa >= 0; isa--)
        if (whet_kernels_for((whet_isa)isa))
            return whet_kernels_for((whet_isa)isa);
    return NULL; /* unreachable: scalar is always usable */
}

static const char *const isa_names[WHET_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

const char *whet_isa_name(whet_isa isa)
{
    return ((int)isa >= 0 && isa < WHET_ISA_COUNT) ? isa_names[isa] : "unknown";
}

int whet_isa_from_name(const char *name)
{
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++)
        if (strcmp(name, isa_names[isa]) == 0)
            return isa;
    return -1;
}
