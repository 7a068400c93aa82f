#!/usr/bin/env bash
# Runs the whole Skiff test suite on a fresh Debian machine that has the Rust toolchain:
# installs what the tests call when it is missing (curl; iproute2 and iptables for the
# redirection tests, which make network namespaces and so need root; python3 with venv for
# the manifest checks), then runs every test, then checks the Kubernetes manifests (k8s/) and
# the injector's output against the Kubernetes API schemas (both install kubernetes-validate
# from PyPI into a virtualenv under the target directory on first use).
# Extra arguments go to `cargo test`, and then only the cargo tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

# `kubernetes`: the API-server source of `serve --kubernetes`, tested against a fake API server.
cargo test --workspace --locked --features skiff-xds/kubernetes "$@"

if [ $# -gt 0 ]; then
  echo "test.sh: arguments given, so only cargo test ran (not the manifest checks)" >&2
  exit 0
fi
bash xds/tests/validate-injection.sh
bash k8s/validate.sh
