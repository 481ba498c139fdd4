# whet bench train on a tiny shape: option checking, then (natively) one run
# of each method: its JSON has positive figures, a first loss of about
# ln(vocabulary) that LoRA (B = 0) and full fine-tuning share bit for bit, a
# loss that full fine-tuning's AdamW step lowers, a memory plan, the baseline
# skipped with a note when its script is missing, --profile's phases and the
# sweep's five lengths; --compute bf16 in the JSON, the plan and the row's
# name. Speed itself is never asserted here.
. "$(dirname "$0")/lib.inc"

tiny="--hidden 32 --layers 2 --heads 4 --kv-heads 2 --ffn 64 --vocab 256 --seq-len 8 --batch-size 2 --steps 1"

run 0 bench --help
stdout_has 'whet bench train'
stdout_has '--base-dtype'
stdout_has '--compute'
run 1 bench train --method half
stderr_has "--method wants lora, full or both"
run 1 bench train --base-dtype f16
stderr_has "--base-dtype"
run 1 bench train --compute f16
stderr_has "--compute wants f32 or bf16"
run 1 bench train --shape llama-70b
stderr_has "smollm-135m"
run 1 bench train --steps 0
run 1 bench train --hidden 30 --heads 4
stderr_has "head size"
run 1 bench train --heads 4 --kv-heads 3 --hidden 32
run 1 bench train --lora-rank x
run 1 bench train --peak 0

case "$WHET" in
*qemu*) ;; # an emulated training step would take long and measure nothing
*)
    # shellcheck disable=SC2086
    run 0 bench train $tiny --method both --threads 1 --no-torch --json
    stdout_has '^\{"benchmark":"train","model":\{"hidden":32,"layers":2,"heads":4,"kv_heads":2,"ffn":64,"vocab":256,'
    stdout_has '"runs":\[\{"method":"lora","lora_rank":8,"base_dtype":"f32","compute":"f32","seq_len":8,"batch_size":2,'
    stdout_has '\{"method":"full","base_dtype":"f32","compute":"f32","seq_len":8,"batch_size":2,'
    [ "$(grep -oE '"tokens_per_s":[0-9.e+]*[1-9]' "$out" | wc -l)" -eq 2 ] || fail "not 2 positive tokens/s"
    [ "$(grep -oE '"peak_rss_mib":[0-9.e+]*[1-9]' "$out" | wc -l)" -eq 2 ] || fail "not 2 positive peak RSS"
    stdout_has '"memory_plan_mib":\{"weights":[0-9.]+,"base_bf16":0(\.0)?,"adapter":[0-9.]*[1-9]'
    # MFU's denominator: the FMA peak of the threads at once, measured between the steps
    [ "$(grep -oE '"mfu_peak_gflops":[0-9.e+]*[1-9][0-9.e+]*,"mfu_peak_source":"threads_together"' "$out" | wc -l)" -eq 2 ] ||
        fail "not 2 runs with an MFU peak measured between their steps"
    stdout_has '"mfu_vs_core_peak_times_threads":[0-9.e+-]+'
    grep -q '"torch"' "$out" && fail "--no-torch ran the baseline"
    firsts=$(grep -oE '"loss_first":[0-9.e+-]+' "$out" | sed 's/.*://' | sort -u)
    [ "$(echo "$firsts" | wc -l)" -eq 1 ] || fail "LoRA (B = 0) and full fine-tuning start from different losses: $firsts"
    awk -v l="$firsts" 'BEGIN { exit !(l > 5.3 && l < 5.8) }' || fail "first loss '$firsts' is not about ln(256)"
    full_last=$(sed -n 's/.*"method":"full".*"loss_last":\([0-9.e+-]*\).*/\1/p' "$out")
    awk -v a="$firsts" -v b="${full_last:-99}" 'BEGIN { exit !(b < a) }' ||
        fail "full fine-tuning's step did not lower the loss ($firsts -> $full_last)"

    # shellcheck disable=SC2086
    run 0 bench train $tiny --base-dtype bf16 --threads 2 --torch /nonexistent/torch_llama.py --profile --json \
        --peak 100
    stdout_has '"fma_peak_gflops_per_core":100(\.0)?,"fma_peak_source":"option",'
    stdout_has '"mfu_peak_gflops":200(\.0)?,"mfu_peak_source":"option",'
    stdout_has '"base_dtype":"bf16"'
    stdout_has '"base_bf16":[0-9.]*[1-9]'
    stdout_has '"torch":null,"torch_note":"skipped: no baseline script at /nonexistent/torch_llama.py'
    for phase in forward head_ce_forward head_ce_backward backward optimizer; do
        stdout_has "\\{\"phase\":\"$phase\",\"wall\":[0-9.e+-]+,\"cpu\":[0-9.e+-]+,\"kernels\":\\{\"gemm\":"
    done
    stdout_has '"lora_gemm":[0-9.e+-]*[1-9]'
    stdout_has '"not_running":[0-9.e+-]+,"job_idle":[0-9.e+-]+\}'

    # --compute bf16: full fine-tuning on bf16 shadows (counted in the plan), from the same first loss
    # shellcheck disable=SC2086
    run 0 bench train $tiny --method full --compute bf16 --threads 2 --no-torch --json --peak 100
    stdout_has '\{"method":"full","base_dtype":"f32","compute":"bf16",'
    stdout_has '"base_bf16":[0-9.]*[1-9]'
    bf16_first=$(grep -oE '"loss_first":[0-9.e+-]+' "$out" | sed 's/.*://')
    awk -v a="$firsts" -v b="${bf16_first:-99}" 'BEGIN { d = a - b; exit !(d < 0.01 && d > -0.01) }' ||
        fail "--compute bf16's first loss $bf16_first is not fp32's $firsts"
    # shellcheck disable=SC2086
    run 0 bench train $tiny --method full --compute bf16 --threads 1 --no-torch --peak 100
    stdout_has '^full bf16, B = 2 × T = 8: memory plan'
    stdout_has 'bf16 shadows of the projections and the head'

    # shellcheck disable=SC2086
    run 0 bench train $tiny --threads 1 --no-torch --profile --peak 100
    stdout_has '^  layers forward '
    stdout_has ' not run job idle$'
    stdout_has '^  total '

    # shellcheck disable=SC2086
    run 0 bench train $tiny --threads 1 --sweep --json --peak 100
    for t in 128 256 512 1024 2048; do
        stdout_has "\"seq_len\":$t,\"batch_size\":1,"
    done
    ;;
esac
finish
