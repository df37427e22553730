#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, policy in deny.toml: licences (allow-list), bans
# (duplicate versions warn, wildcards and OpenSSL fail), sources (crates.io only) and advisories
# (RustSec: any advisory or yanked version fails). Installs cargo-deny when it is missing. Exits
# non-zero when a check fails.
#
# The advisory database comes from one of two sources, and the output says which:
#   JWTGATE_ADVISORY_DB=DIR   an offline snapshot of github.com/rustsec/advisory-db (a copy of the
#                             repository's files, with or without .git). .ci/run passes
#                             ../shared/rustsec-advisory-db beside the clone. The snapshot's date,
#                             which cargo-deny reads to judge staleness, is its git HEAD's when it
#                             is a repository, else JWTGATE_ADVISORY_DB_DATE, else the
#                             GIT_COMMITTER_DATE named in DIR.README.md beside it.
#   (unset)                   a fresh fetch from GitHub by cargo-deny. Under CI=true this is an
#                             error: CI must name its database, and a missing one fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
# The directory cargo-deny derives from the default advisory-db URL (see
# ../shared/rustsec-advisory-db.README.md); an offline snapshot must sit there under db-path.
DB_DIR_NAME="advisory-db-3157b0e258782691"

if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny $CARGO_DENY_VERSION (a few minutes: it is built from source)"
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi
echo "== $(cargo deny --version)"

cargo deny --locked check licenses bans sources
echo "supply chain ok: licenses bans sources"

db="${JWTGATE_ADVISORY_DB:-}"
if [ -z "$db" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "CI=true but JWTGATE_ADVISORY_DB is not set: CI must name its advisory database (.ci/run does)" >&2
    exit 1
  fi
  echo "== advisories: source = fresh fetch of https://github.com/rustsec/advisory-db (JWTGATE_ADVISORY_DB unset)"
  cargo deny --locked check advisories
  echo "supply chain ok: advisories (fresh fetch)"
  exit 0
fi

if [ ! -d "$db/crates" ]; then
  echo "JWTGATE_ADVISORY_DB=$db is not an advisory database (no crates/ directory)" >&2
  exit 1
fi
db="$(cd "$db" && pwd)"
if [ -d "$db/.git" ]; then
  date="$(git -C "$db" log -1 --format=%cI)"
  commit="$(git -C "$db" rev-parse HEAD)"
else
  date="${JWTGATE_ADVISORY_DB_DATE:-}"
  if [ -z "$date" ] && [ -f "$db.README.md" ]; then
    date="$(grep -o 'GIT_COMMITTER_DATE=[0-9T:+-]*' "$db.README.md" | head -n 1 | cut -d= -f2)"
  fi
  commit="$( (grep -o 'commit [0-9a-f]\{40\}' "$db.README.md" 2>/dev/null || true) | head -n 1 | cut -d' ' -f2)"
  if [ -z "$date" ]; then
    echo "cannot tell the date of the snapshot $db: set JWTGATE_ADVISORY_DB_DATE (ISO 8601)" >&2
    exit 1
  fi
fi
echo "== advisories: source = offline snapshot $db (rustsec/advisory-db ${commit:-commit unknown}, dated $date)"

# cargo-deny reads <db-path>/<name derived from the URL> and asks git for its HEAD date: give it a
# throw-away one-commit repository dated as the snapshot, so staleness is reported honestly.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/db"
cp -r "$db" "$work/db/$DB_DIR_NAME"
rm -rf "$work/db/$DB_DIR_NAME/.git"
(
  cd "$work/db/$DB_DIR_NAME"
  git init -q
  git add -A
  GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
    git -c user.name=jwtgate -c user.email=ci@jwtgate.invalid -c commit.gpgsign=false \
    commit -q -m "rustsec/advisory-db snapshot ${commit:-}"
)
# The project's policy with db-path pointing at the snapshot (deny.toml says why).
sed "s|^db-urls = .*|&\ndb-path = \"$work/db\"|" deny.toml >"$work/deny.toml"
grep -q "^db-path = \"$work/db\"" "$work/deny.toml" || { echo "deny.toml has no db-urls line to anchor db-path" >&2; exit 1; }
cargo deny --offline --locked --config "$work/deny.toml" check advisories
echo "supply chain ok: advisories (offline snapshot, dated $date)"
