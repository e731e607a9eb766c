#!/bin/sh
# Run every fuzz target for a fixed time and print executions and crashes per target.
# Usage: fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -u
secs=${1:-60}
cd "$(dirname "$0")" || exit 1
status=0
for target in profile manifest lockfile links; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="artifacts/$target/run.log"
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$secs" -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(find "artifacts/$target" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
  echo "$target: executions=${execs:-0} crashes=$crashes (exit $rc, log $log)"
  [ "$crashes" -eq 0 ] && [ "$rc" -eq 0 ] || status=1
done
exit $status
