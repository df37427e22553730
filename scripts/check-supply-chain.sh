#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, policy in deny.toml: licences (allow-list), bans
# (duplicate versions warn, wildcards and OpenSSL fail) and sources (crates.io only).
# Installs cargo-deny when it is missing. Exits non-zero when a check fails.
#
# Advisories (RustSec) need the advisory database from GitHub, which the build network cannot
# reach (SECURITY.md, "Supply chain"); run them where GitHub is reachable with
#     CHECK_ADVISORIES=1 scripts/check-supply-chain.sh      (or: cargo deny check advisories)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"

if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny $CARGO_DENY_VERSION (a few minutes: it is built from source)"
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi
echo "== $(cargo deny --version)"

checks=(licenses bans sources)
if [ "${CHECK_ADVISORIES:-0}" = "1" ]; then
  checks+=(advisories)
else
  echo "(advisories skipped: they need GitHub; set CHECK_ADVISORIES=1 where it is reachable)"
fi

cargo deny --locked check "${checks[@]}"
echo "supply chain ok: ${checks[*]}"
