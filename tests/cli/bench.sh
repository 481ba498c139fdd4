# whet bench: option checking, and (natively) one quick run whose JSON has a
# positive figure for every layout. Speed itself is never asserted here.
. "$(dirname "$0")/lib.inc"

run 0 bench --help
stdout_has '^usage: whet bench'
run 2 bench no-such-benchmark
run 2 bench gemm --no-such-option
run 2 bench gemm --isa avx1024
stderr_has "unknown --isa 'avx1024'"
run 2 bench gemm --threads 0
run 2 bench gemm --cpu-time --threads 2
stderr_has 'one thread'

case "$WHET" in
*qemu*) ;; # an emulated GEMM benchmark would take long and measure nothing
*)
    run 0 cpu --json
    best=$(sed 's/.*"isa":"\([a-z0-9]*\)".*/\1/' "$out")
    run 0 bench gemm --isa "$best" --threads 1 --repeat 1 --seconds 0 --json
    stdout_has '^\{"benchmark":"gemm"'
    # 6 shapes x (3 fp32 layouts + 2 bf16): every figure a positive number
    [ "$(grep -oE "\"isa\":\"$best\"[^}]*\"gflops_best\":[0-9.e+]+" "$out" | wc -l)" -eq 30 ] ||
        fail "not 30 $best GEMM figures"
    if grep -oE '"gflops_best":[^,}]*' "$out" | grep -qvE '"gflops_best":[0-9]*\.?[0-9]*[1-9]'; then
        fail "a GFLOP/s figure is not positive"
    fi
    ;;
esac
finish
