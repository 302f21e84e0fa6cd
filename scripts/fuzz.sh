#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets in fuzz/, one at a time, one process each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 600; no TARGET means all of them (see `cargo fuzz list`).
# Each target starts from fuzz/corpus/<target>/ and fuzz/regressions/<target>/ and fuzzes in a
# scratch copy of the corpus (fuzz/target/corpus/<target>/). After the run:
#   - a crash, timeout or out-of-memory input is copied to fuzz/regressions/<target>/ (so
#     `cargo test --test fuzz_regressions` replays it from then on) and the script exits 1
#     at the end;
#   - a copy of the scratch corpus is minimised (`cargo fuzz cmin` with -set_cover_merge=1
#     -use_counters=0: a small set that covers every edge reached; plain cmin keeps an input
#     per hit-count bucket, thousands of files), inputs over 64 KiB are dropped, and the result
#     replaces fuzz/corpus/<target>/ (review and commit it if it is worth keeping). The
#     scratch corpus keeps everything for the next run.
# Logs: fuzz/target/logs/<target>.log. A summary line per target goes to stdout.
#
# Stable Rust works: `cargo fuzz build -s none` (no sanitizer; AddressSanitizer needs nightly
# and Rust code has no use for it here). cargo-fuzz is installed from crates.io if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none
mkdir -p fuzz/target/logs
failed=0
for t in "${targets[@]}"; do
  work=fuzz/target/corpus/$t
  artifacts=fuzz/target/artifacts/$t
  log=fuzz/target/logs/$t.log
  mkdir -p "$work" "$artifacts" "fuzz/corpus/$t" "fuzz/regressions/$t"
  cp -n "fuzz/corpus/$t"/* "$work"/ 2>/dev/null || true
  echo "== $t: ${seconds}s (log: $log)"
  set +e
  # One process: no -jobs/-workers/-fork. New inputs go to the scratch corpus; the committed
  # regressions are read as seeds only.
  cargo fuzz run -s none "$t" "$work" "fuzz/regressions/$t" -- \
    -max_total_time="$seconds" -timeout=25 -rss_limit_mb=4096 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  found=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
    failed=1
    for a in "$artifacts"/*; do
      [ -f "$a" ] && cp "$a" "fuzz/regressions/$t/" && echo "   found: fuzz/regressions/$t/$(basename "$a")"
    done
    grep -m1 -A3 'panicked at' "$log" | sed 's/^/   /' || true
  fi
  # Minimise a copy of the scratch corpus into the committed one (edges only, no input over
  # 64 KiB); the scratch corpus keeps everything for the next run.
  find "$work" -type f -size +64k -delete
  min=fuzz/target/corpus-min/$t
  rm -rf "$min"
  mkdir -p "$min"
  cp "$work"/* "$min"/ 2>/dev/null || true
  if cargo fuzz cmin -s none "$t" "$min" -- -set_cover_merge=1 -use_counters=0 >>"$log" 2>&1; then
    rm -rf "fuzz/corpus/$t"
    mv "$min" "fuzz/corpus/$t"
  else
    echo "   cmin failed (see $log); fuzz/corpus/$t left as it was"
  fi
  echo "$t: ${seconds}s, ${execs:-?} executions, exit $status, $found crash input(s), corpus $(ls "fuzz/corpus/$t" | wc -l) files / $(du -sb "fuzz/corpus/$t" | cut -f1) bytes"
done
exit $failed
