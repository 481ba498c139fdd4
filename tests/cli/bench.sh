# whet bench: option checking, and (natively) one quick run of each benchmark:
# gemm's JSON has a positive figure for every layout; forward's a positive
# GFLOP/s and the mean NLL of a randomly initialised model, ln(49152) = 10.80
# within 0.3; tokenize's a positive MB/s and a token count, and a clear error
# without a tokenizer. Speed itself is never asserted here.
. "$(dirname "$0")/lib.inc"

run 0 bench --help
stdout_has '^usage: whet bench'
run 1 bench no-such-benchmark
run 1 bench gemm --no-such-option
run 1 bench gemm --isa avx1024
stderr_has "unknown --isa 'avx1024'"
run 1 bench gemm --threads 0
run 1 bench gemm --cpu-time --threads 2
stderr_has 'one thread'
run 1 bench forward --seq-len 0
stderr_has "seq-len"
run 1 bench forward --seq-len 12x
run 0 bench --help
stdout_has 'forward'
stdout_has 'tokenize'

case "$WHET" in
*qemu*) ;; # an emulated GEMM benchmark would take long and measure nothing
*)
    run 0 cpu --json
    best=$(sed 's/.*"isa":"\([a-z0-9]*\)".*/\1/' "$out")
    run 0 bench gemm --isa "$best" --threads 1 --repeat 1 --seconds 0 --json
    stdout_has '^\{"benchmark":"gemm"'
    # 6 shapes x (3 fp32 layouts + bf16 B in NT, NN + fp32 B in TN, NT, NN):
    # every figure a positive number
    [ "$(grep -oE "\"isa\":\"$best\"[^}]*\"gflops_best\":[0-9.e+]+" "$out" | wc -l)" -eq 48 ] ||
        fail "not 48 $best GEMM figures"
    [ "$(grep -oE '"layout":"TN","dtype":"bf16"[^}]*"b_dtype":"fp32"' "$out" | wc -l)" -eq 6 ] ||
        fail "not 6 bf16 TN figures with fp32 B"
    if grep -oE '"gflops_best":[^,}]*' "$out" | grep -qvE '"gflops_best":[0-9]*\.?[0-9]*[1-9]'; then
        fail "a GFLOP/s figure is not positive"
    fi

    run 0 bench forward --isa "$best" --threads 1 --seq-len 40 --repeat 1 --seconds 0 --json
    stdout_has '^\{"benchmark":"forward","model":"[^"]*","seq_len":40,'
    gflops=$(sed -n 's/.*"results":\[{"isa":"'"$best"'","tokens_per_s":[0-9.]*,"gflops":\([0-9.]*\),.*/\1/p' "$out")
    nll=$(sed -n 's/.*"mean_nll":\([0-9.]*\)}.*/\1/p' "$out")
    awk -v g="${gflops:-0}" 'BEGIN { exit !(g > 0) }' || fail "forward: GFLOP/s '$gflops' is not positive"
    awk -v n="${nll:-0}" 'BEGIN { exit !(n > 10.5 && n < 11.1) }' ||
        fail "forward: mean NLL '$nll' of a random model is not about ln(49152)"
    stdout_has '"forward_vs_gemm":[0-9.]*[1-9]'
    stdout_has '"attention_gflops":[0-9.]*[1-9]'

    run 0 bench tokenize --seconds 0 --json
    stdout_has '^\{"benchmark":"tokenize","tokenizer":"tests/data/tokenizers/gpt2","text_bytes":2[0-9]{5},"tokens":[1-9][0-9]*,'
    stdout_has '"mb_per_s":[0-9.]*[1-9]'
    run 0 bench tokenize --tokenizer tests/data/tokenizers/qwen3 --seconds 0
    stdout_has '^[0-9.]+ MB/s$'
    run 1 bench tokenize --tokenizer /nonexistent/tokenizer.json
    stderr_has 'nonexistent'
    whet=$(echo $WHET) # trimmed (make passes "$(EMULATOR) /abs/path")
    case "$whet" in
    /*) ;;
    *) whet="$(pwd)/$whet" ;;
    esac
    (cd / && $whet bench tokenize >"$out" 2>"$err") && fail "tokenize without a tokenizer succeeded"
    stderr_has 'no tokenizer at tests/data/tokenizers/gpt2.*--tokenizer'
    ;;
esac
finish
