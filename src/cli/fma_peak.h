/* The measured fp32 FMA peak of one core, shared by `whet cpu` and `whet bench`. */
#ifndef WHET_CLI_FMA_PEAK_H
#define WHET_CLI_FMA_PEAK_H

#include "simd/simd.h"

/* GFLOP/s of one core running k->fma_peak_loop: the best of a few ~50 ms runs. */
double cli_measure_fma_peak(const whet_kernels *k);

/* The same, timed by `clock` (seconds), e.g. the CPU time of a process that
 * shares its cores with others. */
double cli_measure_fma_peak_by(const whet_kernels *k, double (*clock)(void));

#endif
