#!/usr/bin/env bash
# Profiles jwtgate on its request path under load, on the same nginx stack as benches/load.sh:
#
#   benches/load/profile.sh perf|callgrind|dhat cached|distinct|direct [OUTDIR]
#
#   perf      : samples jwtgate's CPU time (cpu-clock, works without hardware counters) while wrk
#               runs; writes OUTDIR/perf.data and the flat report OUTDIR/perf-<case>.txt
#   callgrind : runs jwtgate under valgrind, counts instructions only while wrk runs; writes the
#               profile and OUTDIR/callgrind-<case>.txt (self and inclusive), plus Ir per request
#   dhat      : runs jwtgate under valgrind's DHAT; writes OUTDIR/dhat-<case>.json (open it with
#               /usr/libexec/valgrind/dh_view.html) and prints the heap live at its peak per cache
#               entry (the distinct case fills the verified-token cache)
#   cached    : through nginx auth_request, one token repeated (load.sh case b)
#   distinct  : through nginx auth_request, a new EdDSA token every request (case c)
#   direct    : wrk straight at /verify, one token (case d)
#
# Env: PERF_RECORD_OPTS (extra `perf record` options, e.g. "--call-graph dwarf" to see callers with
# `perf report -i OUTDIR/perf-<case>.data -G`), DURATION (10s; callgrind 20s), THREADS (2), CONNECTIONS (32; callgrind 4), GATE_BIN (a
# jwtgate to profile instead of target/release/jwtgate, e.g. one built with line tables:
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=/tmp/prof cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."

MODE=${1:-}
CASE=${2:-}
OUTDIR=$(mkdir -p "${3:-/tmp/jwtgate-profile}" && cd "${3:-/tmp/jwtgate-profile}" && pwd)
USAGE="usage: $0 perf|callgrind|dhat cached|distinct|direct [OUTDIR]"
case "$MODE" in perf | callgrind | dhat) ;; *) echo "$USAGE" >&2 && exit 2 ;; esac
case "$CASE" in cached | distinct | direct) ;; *) echo "$USAGE" >&2 && exit 2 ;; esac

NAME=profile.sh
TOKENS=${TOKENS:-150000}
TOKEN_FILES=1
NGINX_WORKERS=${NGINX_WORKERS:-auto}
CACHE_MAX_ENTRIES=${CACHE_MAX_ENTRIES:-}
THREADS=${THREADS:-2}
if [ "$MODE" != perf ]; then
  command -v valgrind >/dev/null || { echo "$NAME: valgrind is missing (apt-get install valgrind)" >&2 && exit 1; }
  DURATION=${DURATION:-20s}
  CONNECTIONS=${CONNECTIONS:-4}
  if [ "$MODE" = callgrind ]; then
    GATE_WRAPPER="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUTDIR/callgrind.out.$CASE"
  else
    GATE_WRAPPER="valgrind --tool=dhat --dhat-out-file=$OUTDIR/dhat-$CASE.json"
  fi
  READY_TIMEOUT=120
else
  command -v perf >/dev/null || { echo "$NAME: perf is missing (apt-get install linux-perf)" >&2 && exit 1; }
  DURATION=${DURATION:-10s}
  CONNECTIONS=${CONNECTIONS:-32}
fi

# shellcheck source=benches/load/stack.sh
. benches/load/stack.sh

AUTH=(-H "Authorization: Bearer $TOKEN")
case "$CASE" in
  cached) LOAD=("${AUTH[@]}" "http://127.0.0.1:$FRONT/gate/index.html") ;;
  distinct) LOAD=("http://127.0.0.1:$FRONT/gate/index.html" -- "$WORK/tokens/tokens-1.txt" "$THREADS") ;;
  direct) LOAD=("${AUTH[@]}" "http://127.0.0.1:$GATE/verify") ;;
esac
wrk_run() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency -s benches/load/wrk.lua "${LOAD[@]}" >"$WORK/wrk.txt" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID"
  WRK_PID=
}

metric_value() {
  curl -s "http://127.0.0.1:$GATE/metrics" | awk -v s="$1" '$1 == s { print $2 }'
}

secs=${DURATION%s}
if [ "$MODE" = perf ]; then
  # Warm up (the distinct case's warm-up uses up tokens it then cannot reuse: skipped).
  [ "$CASE" != distinct ] && wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${AUTH[@]}" "${LOAD[-1]}" >/dev/null
  # shellcheck disable=SC2086 # PERF_RECORD_OPTS is a list of options
  perf record -F 999 -e cpu-clock ${PERF_RECORD_OPTS:-} -p "$GATE_PID" -o "$OUTDIR/perf-$CASE.data" -- sleep "$secs" 2>"$WORK/perf.log" &
  PERF_PID=$!
  wrk_run "$DURATION"
  wait "$PERF_PID"
  grep '^RESULT' "$WORK/wrk.txt"
  {
    echo "# perf, jwtgate only, case $CASE: $(grep '^RESULT' "$WORK/wrk.txt")"
    perf report -i "$OUTDIR/perf-$CASE.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^$' | head -20 || true
    perf report -i "$OUTDIR/perf-$CASE.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' | head -70 || true
  } >"$OUTDIR/perf-$CASE.txt"
  cat "$OUTDIR/perf-$CASE.txt"
elif [ "$MODE" = callgrind ]; then
  callgrind_control -i on "$GATE_PID" >/dev/null
  wrk_run "$DURATION"
  callgrind_control -i off "$GATE_PID" >/dev/null
  grep '^RESULT' "$WORK/wrk.txt"
  requests=$(sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p' "$WORK/wrk.txt")
  # Stop jwtgate so callgrind writes its profile.
  kill "$GATE_PID"
  wait "$GATE_PID" || true
  GATE_PID=
  total=$(callgrind_annotate "$OUTDIR/callgrind.out.$CASE" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' || true)
  {
    echo "# callgrind, jwtgate only, case $CASE: $requests requests, $total instructions, $((total / requests)) per request"
    echo "## self"
    callgrind_annotate --threshold=95 "$OUTDIR/callgrind.out.$CASE" 2>/dev/null | sed -n '/file:function/,$p' | head -60 || true
    echo "## inclusive"
    callgrind_annotate --inclusive=yes --threshold=99 "$OUTDIR/callgrind.out.$CASE" 2>/dev/null |
      sed -n '/file:function/,$p' | head -80 || true
  } >"$OUTDIR/callgrind-$CASE.txt"
  head -70 "$OUTDIR/callgrind-$CASE.txt"
else
  wrk_run "$DURATION"
  grep '^RESULT' "$WORK/wrk.txt"
  entries=$(metric_value jwtgate_token_cache_entries)
  kill "$GATE_PID"
  wait "$GATE_PID" || true
  GATE_PID=
  if command -v python3 >/dev/null; then
    python3 - "$OUTDIR/dhat-$CASE.json" "$entries" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
entries = max(int(sys.argv[2]), 1)
peak = sum(p.get("gb", 0) for p in d["pps"])
blocks = sum(p.get("gbk", 0) for p in d["pps"])
print(f"heap live at its peak: {peak} bytes in {blocks} blocks; {entries} cache entries: "
      f"{peak / entries:.0f} bytes and {blocks / entries:.1f} blocks per entry")
if peak < 1 << 20:
    print("warning: DHAT saw almost nothing: it sees only malloc, and jwtgate's binary uses mimalloc "
          "(#[global_allocator] in src/main.rs); profile a build without it")
PY
  fi
fi
echo "$NAME: profile in $OUTDIR"
