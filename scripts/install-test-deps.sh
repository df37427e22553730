#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian machine (idempotent; skips what is there):
# nginx with auth_request and the Lua module (ingress-nginx's keepalive flavour), wrk for the
# load benchmark, and the pinned oidc-provider from tests/oidc/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need_apt+=(libnginx-mod-http-lua)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system nginx on port 80; the tests run their own.
  (systemctl stop nginx 2>/dev/null || service nginx stop 2>/dev/null || nginx -s stop 2>/dev/null) || true
fi

if [ -f tests/oidc/package-lock.json ]; then
  if [ ! -d tests/oidc/node_modules ] || [ tests/oidc/package-lock.json -nt tests/oidc/node_modules ]; then
    echo "install-test-deps: npm ci in tests/oidc"
    (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
echo "install-test-deps: nginx $(nginx -v 2>&1 | sed 's/.*\///'), node $(node --version), wrk present: $(command -v wrk >/dev/null && echo yes)"
