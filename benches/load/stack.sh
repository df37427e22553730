# shellcheck shell=bash
# Sourced by benches/load.sh and benches/load/profile.sh: builds the release binary and the token
# generator, generates the tokens, and starts nginx and jwtgate on free loopback ports in a fresh
# work directory, all stopped by an EXIT trap.
#
# In:  NAME (message prefix), TOKENS and TOKEN_FILES (distinct tokens per file, files), BUILD_PROFILE
#      (cargo profile, default release),
#      NGINX_WORKERS, optionally CACHE_MAX_ENTRIES (else jwtgate's default), GATE_BIN (the jwtgate to run),
#      GATE_WRAPPER (a command to run it under, e.g. valgrind) and READY_TIMEOUT (seconds).
# Out: WORK, FRONT, AUX, GATE (ports), ISSUER, TOKEN (the repeated token), NGINX_PID, GATE_PID,
#      WRK_PID (set it while wrk runs so an interrupt stops it), die().

die() {
  echo "$NAME: $*" >&2
  exit 1
}

command -v cargo >/dev/null || die "cargo is missing (https://rustup.rs)"
# On a fresh machine the one command installs what it runs (nginx, wrk, curl) itself.
for tool in nginx wrk curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "$NAME: $tool is missing: running scripts/install-test-deps.sh"
    scripts/install-test-deps.sh
    break
  fi
done
for tool in nginx wrk curl; do
  command -v "$tool" >/dev/null || die "$tool is still missing after scripts/install-test-deps.sh"
done

# BUILD_PROFILE=dev measures nothing worth reading but builds in seconds after `cargo test`
# (scripts/bench-smoke.sh uses it to check the script end to end).
BUILD_PROFILE=${BUILD_PROFILE:-release}
case "$BUILD_PROFILE" in
  dev) PROFILE_DIR=debug ;;
  *) PROFILE_DIR=$BUILD_PROFILE ;;
esac
OUT_DIR=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE_DIR
echo "$NAME: building jwtgate and the token generator, profile $BUILD_PROFILE (release is fat LTO: minutes when cold)"
cargo build --profile "$BUILD_PROFILE" --quiet --bin jwtgate
# A separate invocation: examples enable dev-dependency features, which must not leak into the
# measured binary.
cargo build --profile "$BUILD_PROFILE" --quiet --example gen_tokens
GATE_BIN=${GATE_BIN:-$OUT_DIR/jwtgate}
GEN_BIN=$OUT_DIR/examples/gen_tokens

WORK=$(mktemp -d "/tmp/jwtgate-$NAME.XXXXXX")
chmod 755 "$WORK" # nginx workers may run as nobody
NGINX_PID=
GATE_PID=
WRK_PID=
cleanup() {
  local status=$?
  set +e
  [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null
  [ -n "$GATE_PID" ] && kill "$GATE_PID" 2>/dev/null && wait "$GATE_PID" 2>/dev/null
  [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    echo "$NAME: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports (nothing answers a connect), assigned to the named variable.
next_port=18080
free_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do
    next_port=$((next_port + 1))
  done
  printf -v "$1" '%s' "$next_port"
  next_port=$((next_port + 1))
}
free_port FRONT
free_port AUX
free_port GATE
ISSUER="http://127.0.0.1:$AUX/idp"

echo "$NAME: generating $TOKEN_FILES x $TOKENS distinct EdDSA tokens"
"$GEN_BIN" "$WORK/tokens" "$ISSUER" orders-api "$TOKENS" "$TOKEN_FILES" 3600
chmod -R a+rX "$WORK/tokens"
TOKEN=$(cat "$WORK/tokens/token.txt")

mkdir -p "$WORK/nginx" "$WORK/www"
# The static file the upstream would be: a small HTML page.
{
  echo '<!doctype html><html><head><title>orders</title></head><body>'
  for i in $(seq 1 8); do echo "<p>order line $i: a static response body of a few hundred bytes</p>"; done
  echo '</body></html>'
} >"$WORK/www/index.html"
chmod -R a+rX "$WORK/www"

fill() {
  sed -e "s|@WORK@|$WORK|g" -e "s|@FRONT@|$FRONT|g" -e "s|@AUX@|$AUX|g" -e "s|@GATE@|$GATE|g" \
    -e "s|@WORKERS@|$NGINX_WORKERS|g" -e "s|@ISSUER@|$ISSUER|g" "$1"
}
fill benches/load/nginx.conf.template >"$WORK/nginx/nginx.conf"
fill benches/load/jwtgate.yaml.template >"$WORK/jwtgate.yaml"
if [ -n "${CACHE_MAX_ENTRIES:-}" ]; then
  printf 'cache:\n  max_entries: %s\n' "$CACHE_MAX_ENTRIES" >>"$WORK/jwtgate.yaml"
fi

nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" ||
  die "nginx rejected $WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
# shellcheck disable=SC2086 # GATE_WRAPPER is a command line
${GATE_WRAPPER:-} "$GATE_BIN" serve --config "$WORK/jwtgate.yaml" >"$WORK/jwtgate.log" 2>&1 &
GATE_PID=$!

ready=0
for _ in $(seq 1 $((${READY_TIMEOUT:-10} * 10))); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$GATE/readyz" 2>/dev/null &&
    curl -fsS -o /dev/null "http://127.0.0.1:$AUX/ok" 2>/dev/null; then
    ready=1
    break
  fi
  kill -0 "$GATE_PID" 2>/dev/null || die "jwtgate exited: $(cat "$WORK/jwtgate.log")"
  sleep 0.1
done
[ "$ready" = 1 ] || die "jwtgate or nginx not ready after ${READY_TIMEOUT:-10} s (logs in $WORK)"
