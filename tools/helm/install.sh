#!/usr/bin/env bash
# Installs what the chart checks need, from the registries, into a cache:
#   helm              built from the Go module proxy (helm.sh/helm/v3, pinned)
#   kubernetes-validate  PyPI package bundling the Kubernetes JSON schemas (a venv)
#   manifest-check    tools/helm/manifest-check (strict decoding into the API types,
#                     custom resources included), built with Go
# Each is built once per version (per source for manifest-check) and reused.
#
#   install.sh                 install what is missing; print KEY=path lines on stdout
#   install.sh --no-install    only print the paths; exit 1 naming what is missing
#
# Environment: STREAMSINK_INFRA_DIR (cache root, default ~/.cache/streamsink),
# GO (go binary), PYTHON (python3 binary).
set -euo pipefail

HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STREAMSINK_INFRA_DIR:-$HOME/.cache/streamsink}"
GO="${GO:-go}"
PYTHON="${PYTHON:-python3}"

log() { echo "install.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

install=1
[[ "${1:-}" == "--no-install" ]] && install=0

helm_bin="$CACHE/helm-$HELM_VERSION/helm"
kv_venv="$CACHE/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
kv_bin="$kv_venv/bin/kubernetes-validate"
# The checker's cache key is its source, so an edit rebuilds it.
mc_key=$(cat "$HERE/manifest-check/go.mod" "$HERE/manifest-check/go.sum" "$HERE/manifest-check/main.go" | cksum | cut -d' ' -f1)
mc_bin="$CACHE/manifest-check-$mc_key/manifest-check"

need_go() { command -v "$GO" >/dev/null 2>&1 || die "Go ('$GO') is not on PATH; it builds helm and manifest-check from the Go module proxy"; }

missing=()
[[ -x "$helm_bin" ]] || missing+=("helm $HELM_VERSION ($helm_bin)")
[[ -x "$kv_bin" ]] || missing+=("kubernetes-validate $KUBERNETES_VALIDATE_VERSION ($kv_bin)")
[[ -x "$mc_bin" ]] || missing+=("manifest-check ($mc_bin)")
if ((${#missing[@]})) && ((!install)); then
  die "missing: ${missing[*]}; run: bash tools/helm/install.sh"
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.helm-tools.lock"
flock 9

if [[ ! -x "$helm_bin" ]]; then
  need_go
  log "building helm $HELM_VERSION from the Go module proxy (a few minutes the first time)"
  tmp=$(mktemp -d "$CACHE/helm-build.XXXXXX")
  GOFLAGS=-mod=mod GOBIN="$tmp" "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$(dirname "$helm_bin")"
  mv "$tmp/helm" "$helm_bin"
  rm -rf "$tmp"
fi

if [[ ! -x "$kv_bin" ]]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "Python ('$PYTHON') is not on PATH; kubernetes-validate needs it"
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI into $kv_venv"
  rm -rf "$kv_venv"
  "$PYTHON" -m venv "$kv_venv" || die "python3 -m venv failed (apt-get install -y python3-venv)"
  "$kv_venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

if [[ ! -x "$mc_bin" ]]; then
  need_go
  log "building manifest-check (Kubernetes, Prometheus Operator and KEDA API types from the Go module proxy)"
  mkdir -p "$(dirname "$mc_bin")"
  (cd "$HERE/manifest-check" && "$GO" build -mod=mod -o "$mc_bin.tmp" .)
  mv "$mc_bin.tmp" "$mc_bin"
fi

echo "HELM=$helm_bin"
echo "KUBERNETES_VALIDATE=$kv_bin"
echo "MANIFEST_CHECK=$mc_bin"
