#include "cli/fma_peak.h"

#include "util/timer.h"

double cli_measure_fma_peak(const whet_kernels *k)
{
    return cli_measure_fma_peak_by(k, whet_now);
}

double cli_measure_fma_peak_by(const whet_kernels *k, double (*clock)(void))
{
    size_t iterations = 1 << 16;
    double best = 0;
    k->fma_peak_loop(iterations); /* warm-up: clocks up, code paged in */
    for (int round = 0; round < 8; round++) {
        double t0 = clock();
        double flops = k->fma_peak_loop(iterations);
        double dt = clock() - t0;
        if (dt < 0.02) { /* too short to time well: make it longer */
            iterations *= 4;
            round--;
            continue;
        }
        if (flops / dt > best)
            best = flops / dt;
    }
    return best * 1e-9;
}
