#!/usr/bin/env bash
# The load benchmark: the whole auth_request path through a real nginx, on loopback, in one run.
#
#   benches/load.sh            # builds the release binary, runs every case, rewrites BENCHMARKS.md
#
# Cases, run alternately ROUNDS times each (wrk --latency, same threads/connections/duration):
#   a  ceiling : nginx auth_request to an nginx location answering 200 (keepalive upstream), then a static file
#   b  cached  : the same with jwtgate as the auth target, one token repeated (verified-token cache hits)
#   c  distinct: the same, every request with a token never seen before (EdDSA; cache misses)
#   d  direct  : wrk straight at jwtgate's /verify (one token), next to wrk at nginx `return 200`
# Prints req/s, p50, p99, the ratios b/a, c/a, d/nginx-return-200 and jwtgate's RSS after c, and
# writes them into BENCHMARKS.md between the load.sh markers (the rest of the file is kept).
#
# Knobs (environment): DURATION=10s THREADS=2 CONNECTIONS=32 ROUNDS=2 TOKENS=150000 (distinct
# tokens per round of c) NGINX_WORKERS=auto CACHE_MAX_ENTRIES (unset: jwtgate's default)
# BUILD_PROFILE=release (cargo profile of the binaries; dev only to check the script)
# OUT=BENCHMARKS.md (NO_WRITE=1: print only) KEEP=1 (keep the work directory) CHECK=1 (exit 1 unless
# every response was a 200, case b was all cache hits and case c all misses: scripts/bench-smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
TOKENS=${TOKENS:-150000}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
CACHE_MAX_ENTRIES=${CACHE_MAX_ENTRIES:-}
OUT=${OUT:-BENCHMARKS.md}

# The exact command, with every knob that was changed from its default.
COMMAND="benches/load.sh"
for knob in DURATION THREADS CONNECTIONS ROUNDS TOKENS NGINX_WORKERS CACHE_MAX_ENTRIES BUILD_PROFILE; do
  [ -n "${!knob+x}" ] || continue
  case "$knob=${!knob}" in
    DURATION=10s | THREADS=2 | CONNECTIONS=32 | ROUNDS=2 | TOKENS=150000 | NGINX_WORKERS=auto | CACHE_MAX_ENTRIES= | BUILD_PROFILE=release) ;;
    *) COMMAND="$knob=${!knob} $COMMAND" ;;
  esac
done

NAME=load.sh
TOKEN_FILES=$ROUNDS
# shellcheck source=benches/load/stack.sh
. benches/load/stack.sh

# Every path must answer 200 before anything is measured.
for url in "http://127.0.0.1:$FRONT/ceiling/index.html" "http://127.0.0.1:$FRONT/gate/index.html" \
  "http://127.0.0.1:$GATE/verify" "http://127.0.0.1:$AUX/ok"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")
  [ "$code" = 200 ] || die "$url answered $code, not 200"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(head -1 "$WORK/tokens/tokens-1.txt")x" \
  "http://127.0.0.1:$FRONT/gate/index.html")
[ "$code" = 401 ] || die "a bad signature through nginx answered $code, not 401"

calc() { awk "BEGIN { printf \"%.6f\\n\", $* }"; }

metric() {
  curl -s "http://127.0.0.1:$GATE/metrics" | awk -v s="$1" '$1 == s { print $2 }'
}
# The sum of two fields of /proc/PID/stat, given as indices counted from field 3 (the comm field 2
# may hold spaces, so everything up to the last ')' is dropped); 0 once the process is gone.
stat_sum() {
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0 && return; }
  read -ra fields <<<"${stat##*) }"
  echo $((fields[$2] + fields[$3]))
}
# CPU time (clock ticks, user + system) of a process: fields 14 and 15.
ticks() { stat_sum "$1" 11 12; }
# The same for the children this shell has waited for (fields 16 and 17): wrk, once reaped.
# $$ is the main shell, even inside $(...).
reaped_ticks() { stat_sum $$ 13 14; }
nginx_ticks() { # the workers' (the master only waits)
  local sum=0 pid children=/proc/$NGINX_PID/task/$NGINX_PID/children
  for pid in $(if [ -r "$children" ]; then cat "$children"; else pgrep -P "$NGINX_PID"; fi); do
    sum=$((sum + $(ticks "$pid")))
  done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)

rss_kib() {
  awk -v f="$1" '$1 == f":" { print $2 }' "/proc/$GATE_PID/status"
}

declare -A RPS P50 P99 BAD HITS MISSES CPU_WRK CPU_NGINX CPU_GATE
# run_wrk CASE ROUND URL [wrk options...] [-- script args...]
run_wrk() {
  local case=$1 round=$2 url=$3
  shift 3
  local opts=() args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    opts+=("$1")
    shift
  done
  [ $# -gt 0 ] && shift && args=(-- "$@")
  local hits0 misses0 wrk0 nginx0 gate0
  hits0=$(metric 'jwtgate_token_cache_lookups_total{result="hit"}')
  misses0=$(metric 'jwtgate_token_cache_lookups_total{result="miss"}')
  wrk0=$(reaped_ticks) nginx0=$(nginx_ticks) gate0=$(ticks "$GATE_PID")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/load/wrk.lua "${opts[@]}" "$url" "${args[@]}" \
    >"$WORK/wrk-$case-$round.txt" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || die "wrk failed: $(cat "$WORK/wrk-$case-$round.txt")"
  WRK_PID=
  local gate1 nginx1 wrk1
  gate1=$(ticks "$GATE_PID") nginx1=$(nginx_ticks) wrk1=$(reaped_ticks)
  local line
  line=$(grep '^RESULT ' "$WORK/wrk-$case-$round.txt") || die "no RESULT from wrk: $(cat "$WORK/wrk-$case-$round.txt")"
  local kv r_requests r_rps r_p50_us r_p99_us r_non2xx r_socket_errors r_wrapped
  for kv in ${line#RESULT }; do
    declare "r_${kv%%=*}=${kv#*=}"
  done
  local rps=$r_rps p50=$r_p50_us p99=$r_p99_us non2xx=$r_non2xx sockerr=$r_socket_errors wrapped=$r_wrapped
  local requests=$r_requests
  RPS[$case,$round]=$rps
  P50[$case,$round]=$p50
  P99[$case,$round]=$p99
  BAD[$case,$round]=$((non2xx + sockerr + wrapped))
  # CPU microseconds per request, by process.
  CPU_WRK[$case,$round]=$(calc "($wrk1 - $wrk0) * 1000000 / $HZ / $requests")
  CPU_NGINX[$case,$round]=$(calc "($nginx1 - $nginx0) * 1000000 / $HZ / $requests")
  CPU_GATE[$case,$round]=$(calc "($gate1 - $gate0) * 1000000 / $HZ / $requests")
  HITS[$case,$round]=$(($(metric 'jwtgate_token_cache_lookups_total{result="hit"}') - hits0))
  MISSES[$case,$round]=$(($(metric 'jwtgate_token_cache_lookups_total{result="miss"}') - misses0))
  printf '  %-9s round %s: %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU µs/request: wrk %5.1f nginx %5.1f jwtgate %5.1f  (%s requests; jwtgate cache hits %s, misses %s)\n' \
    "$case" "$round" "$rps" "$(calc "$p50 / 1000")" "$(calc "$p99 / 1000")" \
    "${CPU_WRK[$case,$round]}" "${CPU_NGINX[$case,$round]}" "${CPU_GATE[$case,$round]}" "$requests" \
    "${HITS[$case,$round]}" "${MISSES[$case,$round]}"
  if [ "$non2xx" != 0 ] || [ "$sockerr" != 0 ]; then
    echo "  WARNING: $non2xx non-2xx responses and $sockerr socket errors in $case round $round" >&2
  fi
  if [ "$wrapped" != 0 ]; then
    echo "  WARNING: the distinct tokens ran out in $case round $round (raise TOKENS): some requests were cache hits" >&2
  fi
}

AUTH=(-H "Authorization: Bearer $TOKEN")
CEILING="http://127.0.0.1:$FRONT/ceiling/index.html"
GATED="http://127.0.0.1:$FRONT/gate/index.html"
VERIFY="http://127.0.0.1:$GATE/verify"
RETURN200="http://127.0.0.1:$AUX/ok"

RSS_IDLE=$(rss_kib VmRSS)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load.sh: nginx :$FRONT/:$AUX (workers $NGINX_WORKERS), jwtgate :$GATE (pid $GATE_PID, RSS $((RSS_IDLE / 1024)) MiB idle)"
echo "load.sh: wrk -t$THREADS -c$CONNECTIONS -d$DURATION; load average before: $LOAD_BEFORE"

echo "load.sh: warm-up (2 s each, not counted)"
for url in "$CEILING" "$GATED" "$VERIFY" "$RETURN200"; do
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${AUTH[@]}" "$url" >/dev/null
done

CASES=(a b c d_gate d_nginx)
for round in $(seq 1 "$ROUNDS"); do
  echo "load.sh: round $round"
  run_wrk a "$round" "$CEILING" "${AUTH[@]}"
  run_wrk b "$round" "$GATED" "${AUTH[@]}"
  run_wrk c "$round" "$GATED" -- "$WORK/tokens/tokens-$round.txt" "$THREADS"
  RSS_AFTER_C=$(rss_kib VmRSS)
  run_wrk d_gate "$round" "$VERIFY" "${AUTH[@]}"
  run_wrk d_nginx "$round" "$RETURN200" "${AUTH[@]}"
done
RSS_HWM=$(rss_kib VmHWM)
CACHE_ENTRIES=$(metric jwtgate_token_cache_entries)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mean() { # mean ARRAY CASE
  local -n arr=$1
  local sum=0 r
  for r in $(seq 1 "$ROUNDS"); do sum=$(calc "$sum + ${arr[$2,$r]}"); done
  calc "$sum / $ROUNDS"
}
fmt() { printf "%.${2:-0}f" "$1"; }
ms() { printf '%.2f' "$(calc "$1 / 1000")"; }
runs() { # "r1 / r2" req/s of a case
  local r out=""
  for r in $(seq 1 "$ROUNDS"); do out+="${out:+ / }$(fmt "${RPS[$1,$r]}")"; done
  echo "$out"
}
verdict() { # verdict VALUE OP TARGET
  if awk "BEGIN { exit !($1 $2 $3) }"; then echo met; else echo MISSED; fi
}

declare -A M
for c in "${CASES[@]}"; do M[$c]=$(mean RPS "$c"); done
RATIO_B=$(calc "${M[b]} / ${M[a]}")
RATIO_C=$(calc "${M[c]} / ${M[a]}")
RATIO_D=$(calc "${M[d_gate]} / ${M[d_nginx]}")
RSS_MIB=$(calc "$RSS_AFTER_C / 1024")

label() {
  case $1 in
    a) echo "a: nginx auth_request → nginx \`return 200\` (ceiling)" ;;
    b) echo "b: nginx auth_request → jwtgate, one token (cache hits)" ;;
    c) echo "c: nginx auth_request → jwtgate, distinct EdDSA tokens (misses)" ;;
    d_gate) echo "d: wrk → jwtgate \`/verify\` directly (one token)" ;;
    d_nginx) echo "d′: wrk → nginx \`return 200\` directly" ;;
  esac
}

{
  echo "<!-- load.sh:begin (generated by benches/load.sh; edit outside the markers) -->"
  echo "## Load benchmark (\`benches/load.sh\`)"
  echo
  echo "- **Command**: \`$COMMAND\` — wrk \`-t$THREADS -c$CONNECTIONS -d$DURATION --latency\`, $ROUNDS rounds, cases alternating"
  echo "- **Date**: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "- **Machine**: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r); load average $LOAD_BEFORE before, $LOAD_AFTER after"
  echo "- **Software**: $(nginx -v 2>&1 | sed 's/.*: //') (worker_processes $NGINX_WORKERS), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(rustc --version | cut -d' ' -f1-2); nginx, jwtgate and wrk share the machine"
  echo
  echo "| case | req/s per round | mean req/s | p50 ms | p99 ms | CPU µs per request: wrk / nginx / jwtgate | jwtgate cache hits / misses |"
  echo "|---|---|---|---|---|---|---|"
  for c in "${CASES[@]}"; do
    hm="—"
    if [ "$c" != a ] && [ "$c" != d_nginx ]; then
      h=0 m=0
      for r in $(seq 1 "$ROUNDS"); do h=$((h + HITS[$c,$r])) m=$((m + MISSES[$c,$r])); done
      hm="$h / $m"
    fi
    cpu="$(fmt "$(mean CPU_WRK "$c")" 1) / $(fmt "$(mean CPU_NGINX "$c")" 1) / $(fmt "$(mean CPU_GATE "$c")" 1)"
    echo "| $(label "$c") | $(runs "$c") | $(fmt "${M[$c]}") | $(ms "$(mean P50 "$c")") | $(ms "$(mean P99 "$c")") | $cpu | $hm |"
  done
  echo
  echo "| ratio (means of one run) | measured | target | |"
  echo "|---|---|---|---|"
  echo "| b / a (cached, vs ceiling) | $(fmt "$RATIO_B" 3) | ≥ 0.90 | $(verdict "$RATIO_B" '>=' 0.90) |"
  echo "| c / a (distinct tokens, vs ceiling) | $(fmt "$RATIO_C" 3) | ≥ 0.60 | $(verdict "$RATIO_C" '>=' 0.60) |"
  echo "| d / d′ (jwtgate vs nginx \`return 200\`) | $(fmt "$RATIO_D" 3) | ≥ 0.80 | $(verdict "$RATIO_D" '>=' 0.80) |"
  echo "| jwtgate RSS after c ($((ROUNDS * TOKENS)) distinct tokens, \`cache.max_entries\`: ${CACHE_MAX_ENTRIES:-default}) | $(fmt "$RSS_MIB" 1) MiB | ≤ 64 MiB | $(verdict "$RSS_MIB" '<=' 64) |"
  echo
  echo "CPU per request: each process's user + system time during the case (\`/proc/PID/stat\`; nginx is all its workers, front and upstream servers) over the requests wrk completed. The 2 cores have 2,000,000 µs per second to share, so the three sum to about 2,000,000 / req/s when the machine is saturated."
  echo
  echo "RSS (VmRSS): $(fmt "$(calc "$RSS_IDLE / 1024")" 1) MiB idle after start, $(fmt "$RSS_MIB" 1) MiB after c; peak (VmHWM) $(fmt "$(calc "$RSS_HWM / 1024")" 1) MiB; $CACHE_ENTRIES entries in the token cache at the end."
  echo "<!-- load.sh:end -->"
} >"$WORK/section.md"

echo
cat "$WORK/section.md"

if [ "${NO_WRITE:-0}" != 1 ]; then
  if [ -f "$OUT" ] && grep -q '<!-- load.sh:begin' "$OUT"; then
    awk -v section="$WORK/section.md" '
      /<!-- load.sh:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
      /<!-- load.sh:end -->/ { skip = 0; next }
      !skip { print }' "$OUT" >"$WORK/out.md"
    cp "$WORK/out.md" "$OUT"
  else
    { [ -f "$OUT" ] && cat "$OUT" && echo; cat "$WORK/section.md"; } >"$WORK/out.md"
    cp "$WORK/out.md" "$OUT"
  fi
  echo "load.sh: wrote $OUT"
fi

if [ "${CHECK:-0}" = 1 ]; then
  problems=()
  for c in "${CASES[@]}"; do
    for r in $(seq 1 "$ROUNDS"); do
      [ "${BAD[$c,$r]}" = 0 ] || problems+=("$c round $r: ${BAD[$c,$r]} non-200 responses, socket errors or reused tokens")
    done
  done
  for r in $(seq 1 "$ROUNDS"); do
    [ "${MISSES[b,$r]}" = 0 ] && [ "${HITS[b,$r]}" -gt 0 ] ||
      problems+=("b round $r: ${HITS[b,$r]} cache hits, ${MISSES[b,$r]} misses (want hits only)")
    [ "${HITS[c,$r]}" = 0 ] && [ "${MISSES[c,$r]}" -gt 0 ] ||
      problems+=("c round $r: ${HITS[c,$r]} cache hits, ${MISSES[c,$r]} misses (want misses only)")
  done
  if [ ${#problems[@]} -gt 0 ]; then
    printf 'load.sh: CHECK failed: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  echo "load.sh: CHECK ok: every response a 200, case b all cache hits, case c all misses"
fi
