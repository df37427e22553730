#!/usr/bin/env bash
# Instructions per operation of the decision core, counted by callgrind: deterministic, unlike
# timings on a shared 2-core machine. Runs the criterion bench binary in its
# `--count-instructions N CASE...` mode and counts only inside each case's measured loop.
#
#   benches/load/instructions.sh [N] [CASE...]
#
# Default cases: each algorithm's jwtgate validate next to jsonwebtoken::decode and the bare
# aws-lc signature check (key parsed per call, as both do, and parsed once), the cache hit and
# Gate::decide (hit, and a miss with a new EdDSA token each time). N defaults to 300.
# Note: under valgrind aws-lc cannot use the SHA extensions (SHA-NI), so SHA-256 costs several
# times more instructions here than it costs time on a CPU that has them.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2 && exit 1; }

N=${1:-300}
shift || true
CASES=("$@")
if [ ${#CASES[@]} -eq 0 ]; then
  for alg in rs256 ps256 es256 es384 eddsa; do
    CASES+=("jwtgate_validate_$alg" "jsonwebtoken_decode_$alg")
    CASES+=("aws_lc_verify_key_parsed_per_call_$alg" "aws_lc_verify_key_parsed_once_$alg")
  done
  CASES+=(jwtgate_hit_rs256 gate_decide_hit_rs256 gate_decide_miss_eddsa)
fi

BIN=$(cargo bench --bench decision --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*decision[^"]*\)".*/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "instructions.sh: no bench binary" >&2 && exit 1; }

OUT=$(mktemp -d /tmp/jwtgate-instructions.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
# One process for every case (the same keys and tokens), one profile dump after each case's loop.
valgrind --tool=callgrind --toggle-collect=decision::run_loop --dump-after=decision::run_loop \
  --callgrind-out-file="$OUT/cg.out" "$BIN" --count-instructions "$N" "${CASES[@]}" >/dev/null 2>"$OUT/log" ||
  { echo "instructions.sh: failed: $(tail -5 "$OUT/log")" >&2 && exit 1; }
printf '%-42s %14s\n' case "instructions/op"
i=0
for case in "${CASES[@]}"; do
  i=$((i + 1))
  total=$(callgrind_annotate "$OUT/cg.out.$i" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  printf '%-42s %14d\n' "$case" $((total / N))
done
