#!/usr/bin/env bash
# The load benchmark end to end, briefly: proves the README's benchmark command works on a fresh
# machine and that each case measures what it says (cached case all hits, distinct case all
# misses, every response a 200). It asserts no timing: benches report, tests assert.
set -euo pipefail
cd "$(dirname "$0")/.."

# The debug binaries `cargo test` has already built: this checks the script, not the numbers.
BUILD_PROFILE=dev DURATION=${DURATION:-2s} ROUNDS=1 TOKENS=${TOKENS:-40000} NO_WRITE=1 CHECK=1 benches/load.sh
