#!/bin/sh
# Runs test programs (cmocka binaries) and CLI test scripts, prints each one's
# result and a closing "N passed, N failed" line; exits non-zero on any failure.
# EMULATOR (e.g. "qemu-aarch64 -L ...") runs binaries built for another CPU;
# WHET is the whet command the CLI scripts call.
passed=0
failed=0
failed_names=
logdir=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$logdir"
for t in "$@"; do
    name=$(basename "$t")
    log="$logdir/$name.log"
    start=$(date +%s)
    case $t in
    *.sh) sh "$t" >"$log" 2>&1 ;;
    *) $EMULATOR "$t" >"$log" 2>&1 ;;
    esac
    status=$?
    secs=$(( $(date +%s) - start ))
    if [ $status -eq 0 ]; then
        passed=$((passed + 1))
        # cmocka's summary line, when there is one, says how many cases ran
        cases=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -1 | sed 's/.*\] //')
        printf 'PASS  %-36s %3ss  %s\n' "$name" "$secs" "$cases"
    else
        failed=$((failed + 1))
        failed_names="$failed_names $name"
        printf 'FAIL  %-36s %3ss  (exit %s)\n' "$name" "$secs" "$status"
        tail -n 30 "$log" | sed 's/^/      /'
    fi
done
echo "check: $passed passed, $failed failed"
[ $failed -eq 0 ] || { echo "failed:$failed_names"; exit 1; }
