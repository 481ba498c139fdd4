/* whet cpu: what the CPU offers, how fast its FMA units run, and which kernels
 * whet will use on it. */
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fma_peak.h"
#include "simd/simd.h"
#include "util/compute.h"
#include "util/log.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kernel_names[] = {
#define WHET_KERNEL_NAME(ret, name, params) #name,
    WHET_KERNEL_LIST(WHET_KERNEL_NAME)
#undef WHET_KERNEL_NAME
};
enum { NKERNELS = sizeof kernel_names / sizeof kernel_names[0] };

static void usage(FILE *out)
{
    fputs("usage: whet cpu [--json]\n"
          "Show the CPU's features, the measured fp32 FMA peak of one core and the\n"
          "kernel chosen for each operation (WHET_ISA forces a level).\n"
          "  --json      print one JSON object\n"
          "  --version   print whet's version\n"
          "  --help      this text\n",
          out);
}

typedef struct {
    const char *name;
    int value;
} feature;

int cmd_cpu(int argc, char **argv)
{
    int json = 0;
    static const struct option options[] = {{"json", no_argument, NULL, 'j'}, CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "cpu", .usage = usage};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1)
        if (opt == 'j')
            json = 1;
    if (p.exit >= 0)
        return p.exit;
    if (optind < argc) {
        whet_error("cpu: unexpected argument '%s'", argv[optind]);
        return WHET_EXIT_ERROR;
    }
    const whet_kernels *k = whet_kernels_from_env();
    if (!k)
        return WHET_EXIT_ERROR;
    const whet_cpu_features *f = whet_cpu_detect();
    const feature features[] = {
        {"sse2", f->sse2}, {"avx", f->avx}, {"avx2", f->avx2}, {"fma", f->fma}, {"f16c", f->f16c},
        {"avx512f", f->avx512f}, {"avx512bw", f->avx512bw}, {"avx512vl", f->avx512vl},
        {"avx512dq", f->avx512dq}, {"avx512_bf16", f->avx512_bf16}, {"asimd", f->asimd},
        {"asimddp", f->asimd_dotprod}, {"asimdhp", f->asimd_fp16}, {"bf16", f->arm_bf16},
        {"i8mm", f->arm_i8mm}, {"sve", f->sve},
    };
    const int nfeatures = sizeof features / sizeof features[0];
    double peak = cli_measure_fma_peak(k);
    int threads = whet_thread_count(0);
    if (threads < 0)
        return WHET_EXIT_ERROR;
    double peak_together = peak;
    if (threads > 1) {
        whet_pool *pool = whet_pool_create(threads);
        if (!pool) {
            whet_error("cpu: cannot start %d threads", threads);
            return WHET_EXIT_ERROR;
        }
        peak_together = cli_measure_fma_peak_together(k, pool);
        whet_pool_destroy(pool);
    }

    if (json) {
        printf("{\"arch\":\"%s\",\"brand\":\"", f->arch);
        for (const char *c = f->brand; *c; c++)
            if (*c != '"' && *c != '\\' && (unsigned char)*c >= 0x20)
                putchar(*c);
        printf("\",\"features\":[");
        for (int i = 0, first = 1; i < nfeatures; i++)
            if (features[i].value) {
                printf("%s\"%s\"", first ? "" : ",", features[i].name);
                first = 0;
            }
        printf("],\"sve_vector_bits\":%d,\"isa\":\"%s\",\"available\":[", f->sve_vector_bits, k->name);
        for (int isa = 0, first = 1; isa < WHET_ISA_COUNT; isa++)
            if (whet_kernels_for((whet_isa)isa)) {
                printf("%s\"%s\"", first ? "" : ",", whet_isa_name((whet_isa)isa));
                first = 0;
            }
        printf("],\"fma_peak_gflops_per_core\":%.1f,\"threads\":%d,\"fma_peak_gflops_threads\":%.1f,\"kernels\":{",
               peak, threads, peak_together);
        for (int i = 0; i < NKERNELS; i++)
            printf("%s\"%s\":\"%s%s%s\"", i ? "," : "", kernel_names[i], k->name,
                   strcmp(kernel_names[i], "gemm_bf16") == 0 ? "/" : "",
                   strcmp(kernel_names[i], "gemm_bf16") == 0 ? k->gemm_bf16_kind : "");
        printf("}}\n");
        return WHET_EXIT_OK;
    }

    printf("cpu:        %s\n", f->brand[0] ? f->brand : "(no brand string)");
    printf("arch:       %s\n", f->arch);
    printf("features:  ");
    for (int i = 0; i < nfeatures; i++)
        if (features[i].value)
            printf(" %s", features[i].name);
    if (f->sve_vector_bits)
        printf(" (SVE %d-bit)", f->sve_vector_bits);
    printf("\navailable: ");
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++)
        if (whet_kernels_for((whet_isa)isa))
            printf(" %s", whet_isa_name((whet_isa)isa));
    printf("\nchosen:     %s%s\n", k->name, getenv("WHET_ISA") && *getenv("WHET_ISA") ? " (WHET_ISA)" : " (best)");
    printf("fma peak:   %.1f GFLOP/s per core (fp32, %s); %.1f on %d thread%s at once (%.2f× one core)\n", peak,
           k->name, peak_together, threads, threads == 1 ? "" : "s", peak > 0 ? peak_together / peak : 0.0);
    printf("threads:    %d%s\n", threads,
           getenv("WHET_THREADS") && *getenv("WHET_THREADS") ? " (WHET_THREADS)" : " (physical cores)");
    printf("kernels:\n");
    for (int i = 0; i < NKERNELS; i++) {
        int is_bf16 = strcmp(kernel_names[i], "gemm_bf16") == 0;
        printf("  %-28s %s%s%s%s\n", kernel_names[i], k->name, is_bf16 ? " (" : "",
               is_bf16 ? k->gemm_bf16_kind : "", is_bf16 ? ")" : "");
    }
    return WHET_EXIT_OK;
}
