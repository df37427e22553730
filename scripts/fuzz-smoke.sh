#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets in fuzz/ and runs each one for FUZZ_SECONDS
# (default 60) from the committed seed corpus (fuzz/corpus/<target>/). Fails on any crash,
# panic, timeout (one input over 10 s) or out-of-memory; libFuzzer then leaves the input in
# fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run <target> <that file>` from fuzz/).
#
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh        # longer runs
#   FUZZ_TARGETS="token" scripts/fuzz-smoke.sh    # one target
#
# Works on a fresh machine with only the stable toolchain: cargo-fuzz is installed when missing,
# and the nightly-only flags it passes (-Zsanitizer=address, -Cpasses=sancov-module, ...) are
# accepted by stable rustc with RUSTC_BOOTSTRAP=1, which is set for these builds only.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TARGETS="${FUZZ_TARGETS:-token jwks config query headers dpop}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

cd fuzz
# 16 codegen units: a much faster build for a slightly slower fuzzer, the right trade for a smoke run.
BUILD_FLAGS=(--codegen-units 16)
echo "== building fuzz targets ($(cargo fuzz --version))"
build_start=$SECONDS
cargo fuzz build "${BUILD_FLAGS[@]}"
echo "built in $((SECONDS - build_start)) s"

# New inputs go to a scratch corpus, so the committed seeds stay a handful of small files.
work=target/smoke
rm -rf "$work"
mkdir -p "$work"
summary=()
for target in $FUZZ_TARGETS; do
  [ -d "corpus/$target" ] || { echo "no seed corpus fuzz/corpus/$target" >&2; exit 1; }
  mkdir -p "$work/corpus/$target"
  log="$work/$target.log"
  echo "== fuzzing $target for ${FUZZ_SECONDS}s (log: fuzz/$log)"
  if ! cargo fuzz run "${BUILD_FLAGS[@]}" "$target" "$work/corpus/$target" "corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    echo "FUZZ FAILURE in $target; the end of its log:" >&2
    tail -n 60 "$log" >&2
    ls -l "artifacts/$target" >&2 2>/dev/null || true
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  found=$(sed -n 's/^stat::new_units_added: *//p' "$log")
  summary+=("$(printf '%-8s %10s execs %8s execs/s %7s new inputs' "$target" "$execs" "$rate" "$found")")
done

echo "== fuzz smoke ok (${FUZZ_SECONDS}s per target, no crash)"
printf '%s\n' "${summary[@]}"
