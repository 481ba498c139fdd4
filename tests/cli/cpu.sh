# whet cpu: features, the measured FMA peak, the chosen kernels; WHET_ISA and
# WHET_THREADS are honoured and checked.
. "$(dirname "$0")/lib.inc"

run 0 cpu
stdout_has '^arch: +(x86_64|aarch64)'
stdout_has '^fma peak: +[0-9]+\.[0-9] GFLOP/s per core \(fp32, [a-z0-9]+\); [0-9]+\.[0-9] on [0-9]+ threads? at once'
stdout_has '^  sgemm +[a-z0-9]+'
stdout_has '^  gemm_bf16 +[a-z0-9]+ \((vdpbf16ps|bfdot|convert)\)'
# the peak is a measurement, so it must be positive
grep -E '^fma peak:' "$out" | grep -qvE ' 0\.0 GFLOP' || fail "FMA peak measured as 0"

run 0 cpu --json
stdout_has '^\{"arch":"[a-z0-9_]+",.*"fma_peak_gflops_per_core":[0-9.]+,.*"kernels":\{"sgemm":'
# all threads at once: measured, so positive (under an emulator well below 1)
together=$(sed -n 's/.*"threads":[0-9]*,"fma_peak_gflops_threads":\([0-9.e+-]*\),.*/\1/p' "$out")
awk -v g="${together:-0}" 'BEGIN { exit !(g > 0) }' || fail "peak of all threads at once '$together' is not positive"

WHET_ISA=scalar run 0 cpu
stdout_has '^chosen: +scalar \(WHET_ISA\)'
stdout_has '^  rmsnorm_forward +scalar$'

WHET_ISA=avx1024 run 1 cpu
stderr_has "^whet: WHET_ISA='avx1024': unknown level"

# a level the CPU cannot run is refused cleanly, never a SIGILL later (the
# architecture is whet's, which under an emulator is not the host's)
run 0 cpu
case $(sed -n 's/^arch: *//p' "$out") in
x86_64) foreign=neon ;;
*) foreign=avx512 ;;
esac
if ! grep -qE "^available:.* $foreign( |$)" "$out"; then
    WHET_ISA=$foreign run 1 cpu
    stderr_has "^whet: WHET_ISA=$foreign: this .* CPU .* cannot run it"
fi

WHET_THREADS=3 run 0 cpu
stdout_has '^threads: +3 \(WHET_THREADS\)'
stdout_has ' on 3 threads at once'
# twice as many threads as CPUs: the peak of them all at once is still about
# the CPUs' (a thread that waits for a core adds nothing), never twice that.
# Only on the CPU itself: under an emulator (whet's architecture not the
# host's) the first loop measured runs while its code is still being
# translated, so the per-core figure comes out low (0.2 GFLOP/s against 0.7
# for four threads, seen under qemu-aarch64) and the ratio means nothing.
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
WHET_THREADS=$((2 * cpus)) run 0 cpu --json
per_core=$(sed -n 's/.*"fma_peak_gflops_per_core":\([0-9.e+-]*\),.*/\1/p' "$out")
together=$(sed -n 's/.*"fma_peak_gflops_threads":\([0-9.e+-]*\),.*/\1/p' "$out")
awk -v t="${together:-0}" 'BEGIN { exit !(t > 0) }' ||
    fail "$((2 * cpus)) threads on $cpus CPUs: the peak at once '$together' is not positive"
arch=$(sed -n 's/^{"arch":"\([a-z0-9_]*\)".*/\1/p' "$out")
[ -n "$arch" ] || fail "whet cpu --json: no \"arch\" first in its output"
if [ "$arch" = "$(uname -m)" ]; then
    awk -v c="${per_core:-0}" -v t="${together:-0}" -v n="$cpus" 'BEGIN { exit !(t <= 1.5 * n * c) }' ||
        fail "$((2 * cpus)) threads on $cpus CPUs: $together GFLOP/s at once against $per_core per core"
fi
WHET_THREADS=zero run 1 cpu
stderr_has "^whet: WHET_THREADS='zero': expected a whole number"

run 1 cpu --no-such-option
run 1 cpu extra-argument
stderr_has "unexpected argument 'extra-argument'"
run 0 cpu --help
stdout_has '^usage: whet cpu'

finish
