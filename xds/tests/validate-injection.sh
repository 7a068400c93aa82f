#!/usr/bin/env bash
# Validates sidecar injection's output against Kubernetes' own API schemas: every golden input
# under xds/tests/inject/ is injected afresh by `skiff-xds inject`, and the inputs, the fresh
# outputs and the expected outputs are all checked by kubernetes-validate (PyPI) in strict
# mode (an unknown field or a wrong type fails), for each Kubernetes version asked for.
#
#   bash xds/tests/validate-injection.sh [VERSION ...]
#
# VERSION defaults to 1.29.0 (the first release with native sidecars on by default) and the
# newest the tool knows. kubernetes-validate is taken from PATH, else installed with pip into
# a virtualenv under the cargo target directory (python3 needed). Items of a `kind: List` are
# not checked by the tool (it warns), nor are enum values (restartPolicy: Sometimes passes).
set -euo pipefail
cd "$(dirname "$0")/../.."

target_dir=${CARGO_TARGET_DIR:-target}
if command -v kubernetes-validate >/dev/null 2>&1; then
  validate=(kubernetes-validate)
else
  venv=${SKIFF_VALIDATE_VENV:-$target_dir/kubernetes-validate-venv}
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    echo "validate-injection: installing kubernetes-validate into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet kubernetes-validate
  fi
  validate=("$venv/bin/kubernetes-validate")
fi

versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  versions=(1.29.0 "$("${validate[@]}" --version)")
fi

cargo build --quiet --locked -p skiff-xds
skiff_xds="$target_dir/debug/skiff-xds"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
files=()
for input in xds/tests/inject/*.yaml; do
  case "$input" in *.injected.yaml) files+=("$input"); continue ;; esac
  files+=("$input")
  fresh="$out/$(basename "$input" .yaml).fresh.yaml"
  "$skiff_xds" inject -f "$input" >"$fresh"
  files+=("$fresh")
done

status=0
for version in "${versions[@]}"; do
  echo "validate-injection: Kubernetes $version, ${#files[@]} files" >&2
  "${validate[@]}" --strict --quiet --kubernetes-version "$version" "${files[@]}" || status=1
done
if [ "$status" -eq 0 ]; then
  echo "validate-injection: every object is valid" >&2
fi
exit "$status"
