/* The measured fp32 FMA peak, shared by `whet cpu` and `whet bench`: of one
 * core alone, and of several threads running at once. */
#ifndef WHET_CLI_FMA_PEAK_H
#define WHET_CLI_FMA_PEAK_H

#include "simd/simd.h"
#include "util/threadpool.h"

/* GFLOP/s of one core running k->fma_peak_loop: the best of a few ~50 ms runs. */
double cli_measure_fma_peak(const whet_kernels *k);

/* The same, timed by `clock` (seconds), e.g. the CPU time of a process that
 * shares its cores with others. */
double cli_measure_fma_peak_by(const whet_kernels *k, double (*clock)(void));

/* GFLOP/s of all of the pool's threads running k->fma_peak_loop at the same
 * time: the best of a few ~50 ms windows of the sum over threads of each
 * one's FLOPs over the window's wall time. It is the peak a multithreaded run
 * can reach, which can be below one core's peak times the threads: cores that
 * run at once may clock lower, a hypervisor may run a virtual CPU on a slower
 * or busier core or stop it, and more threads than cores share them. 0 when
 * out of memory. */
double cli_measure_fma_peak_together(const whet_kernels *k, whet_pool *pool);

#endif
