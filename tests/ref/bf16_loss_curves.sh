#!/bin/sh
# The loss curves of --compute bf16 against fp32 (issue 7: within 1% over 200
# steps on a shipped task): full fine-tuning of datasets/demo-model on
# datasets/query-dsl, the same seed, data order and schedule, once with each
# --compute; then each step's training loss (metrics.jsonl) compared. Not part
# of make check (minutes of training); rerun after changing the bf16 path:
#
#   tests/ref/bf16_loss_curves.sh [OUT_DIR [STEPS [THREADS]]]
#
# Prints the largest relative difference |bf16 − fp32| / fp32 of a step's
# loss, the relative difference of the last 20 steps' mean losses and of the
# final validation losses; exits 1 when either of the first two exceeds 1%.
set -eu
WHET=${WHET:-build/whet}
out=${1:-build/bf16-loss-curves}
steps=${2:-200}
threads=${3:-2}
mkdir -p "$out"
for compute in f32 bf16; do
    rm -rf "${out:?}/$compute"
    start=$(date +%s)
    $WHET train --model datasets/demo-model --data datasets/query-dsl --out "$out/$compute" --method full \
        --compute "$compute" --pack --seq-len 256 --batch-size 8 --lr 3e-4 --warmup-steps 20 --steps "$steps" \
        --seed 42 --save-every 0 --threads "$threads" >"$out/$compute.log" 2>&1 ||
        { echo "whet train --compute $compute failed: see $out/$compute.log"; exit 1; }
    echo "--compute $compute: $steps steps in $(($(date +%s) - start)) s"
done

# losses: "step loss" per training record; the valid losses in order
losses() { grep '"type":"train"' "$1/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*"loss":\([^,}]*\).*/\1 \2/'; }
valid() { grep '"type":"valid"' "$1/metrics.jsonl" | sed 's/.*"loss":\([^,}]*\).*/\1/' | tail -1; }
losses "$out/f32" >"$out/f32.loss"
losses "$out/bf16" >"$out/bf16.loss"
paste "$out/f32.loss" "$out/bf16.loss" | awk '$1 == $3 { print $1, $2, $4 }' >"$out/both.loss"
[ "$(wc -l <"$out/both.loss")" -eq "$steps" ] || { echo "the runs' training records do not pair up step by step"; exit 1; }
echo "step f32 bf16 (first and last 3 steps):"
head -3 "$out/both.loss"
tail -3 "$out/both.loss"
awk -v vf="$(valid "$out/f32")" -v vb="$(valid "$out/bf16")" '
    { d = ($3 - $2) / $2; if (d < 0) d = -d; if (d > worst) { worst = d; at = $1 }; n++; f[n] = $2; b[n] = $3 }
    END {
        for (i = n - 19; i <= n; i++) { sf += f[i]; sb += b[i] }
        tail = (sb - sf) / sf; if (tail < 0) tail = -tail
        printf "%d steps: largest step difference %.3f%% (step %d); last 20 steps mean %.4f (fp32) vs %.4f (bf16), %.3f%%\n",
               n, 100 * worst, at, sf / 20, sb / 20, 100 * tail
        if (vf != "" && vb != "") printf "final validation loss %.4f (fp32) vs %.4f (bf16), %.3f%%\n", vf, vb, 100 * (vb - vf) / vf
        exit (worst > 0.01 || tail > 0.01) ? 1 : 0
    }' "$out/both.loss"
