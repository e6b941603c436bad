#!/usr/bin/env bash
# Builds the channel plugins as WebAssembly components and drops them where
# config.toml expects them: plugins/mailgun.wasm and plugins/twilio.wasm
# (Rust), and plugins/webhook.wasm (Python, componentize-py).
# With --with-test-plugins it also builds the test suite's plugins into
# tests/plugins/*.wasm: the hostile ones (Rust) and js-webhook.wasm
# (JavaScript, jco with its default features, so it imports wasi:http).
#
# The Python and JavaScript toolchains come from scripts/plugin-toolchains.sh
# (installed under .tools/ on first use), unless NOTIFY_COMPONENTIZE_PY /
# NOTIFY_JCO are already set. A Python or JavaScript plugin is rebuilt only
# when its output is older than one of its inputs (its sources, wit/, this
# script) or was built by another toolchain version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

target=wasm32-wasip2
if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> adding the $target target (rustup)" >&2
    rustup target add "$target"
  fi
fi

packages=(-p notify-plugin-mailgun -p notify-plugin-twilio)
with_tests=false
if [[ "${1:-}" == "--with-test-plugins" ]]; then
  with_tests=true
  packages+=(-p hostile-plugin -p not-a-channel)
fi

echo "==> building plugins for $target" >&2
cargo build --quiet --target "$target" --profile plugin "${packages[@]}"

out="${CARGO_TARGET_DIR:-target}/$target/plugin"
cp "$out/notify_plugin_mailgun.wasm" plugins/mailgun.wasm
cp "$out/notify_plugin_twilio.wasm" plugins/twilio.wasm
if $with_tests; then
  cp "$out/hostile_plugin.wasm" tests/plugins/hostile.wasm
  cp "$out/not-a-channel.wasm" tests/plugins/not-a-channel.wasm
fi

# --- Plugins in other languages -------------------------------------------------

# Build records (toolchain version and command per output), so a new
# toolchain rebuilds; kept with the other build output.
stamps="${CARGO_TARGET_DIR:-target}/plugin-stamps"
mkdir -p "$stamps"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# needs_build OUTPUT STAMP-TEXT INPUT...: true when OUTPUT is missing, was
# built with another toolchain or command, or is older than any input file.
needs_build() {
  local output=$1 stamp_text=$2 stamp
  shift 2
  stamp="$stamps/$(basename "$output").stamp"
  [[ -f $output && -f $stamp ]] || return 0
  [[ "$(cat "$stamp")" == "$stamp_text" ]] || return 0
  [[ -z "$(find "$@" -type f -newer "$output" -print -quit)" ]] || return 0
  return 1
}

record_build() {
  printf '%s' "$2" > "$stamps/$(basename "$1").stamp"
}

if [[ -z "${NOTIFY_COMPONENTIZE_PY:-}" ]]; then
  eval "$(./scripts/plugin-toolchains.sh --python)"
fi
if $with_tests && [[ -z "${NOTIFY_JCO:-}" ]]; then
  eval "$(./scripts/plugin-toolchains.sh --js)"
fi

# plugins/webhook.wasm: the signed-webhook channel, Python. Only the plugin's
# modules are bundled (not its tests or cases), from a copy, so no
# __pycache__ or stray file of the folder ends up in the component.
# componentize-py reads only the *.wit files directly in wit/ (0.2.0), not
# wit/0.1.0/. It generates the `wit_world` bindings itself at build time.
py_out=plugins/webhook.wasm
py_version=$("$NOTIFY_COMPONENTIZE_PY" --version)
py_cmd="componentize-py -d wit -w channel componentize -p <staged plugins/webhook> app -o $py_out"
py_sources=(plugins/webhook/app.py plugins/webhook/webhook_logic.py)
if needs_build "$py_out" "$py_version: $py_cmd" "${py_sources[@]}" wit scripts/build-plugins.sh; then
  echo "==> building $py_out ($py_version)" >&2
  mkdir -p "$scratch/webhook"
  cp "${py_sources[@]}" "$scratch/webhook/"
  "$NOTIFY_COMPONENTIZE_PY" -d wit -w channel componentize \
    -p "$scratch/webhook" app -o "$scratch/webhook.wasm" >/dev/null
  mv "$scratch/webhook.wasm" "$py_out"
  record_build "$py_out" "$py_version: $py_cmd"
else
  echo "==> $py_out is up to date" >&2
fi

# tests/plugins/js-webhook.wasm: the same channel in JavaScript, with jco's
# default feature set (its output imports wasi:http, which the host denies).
if $with_tests; then
  js_out=tests/plugins/js-webhook.wasm
  js_version="jco $("$NOTIFY_JCO" --version)"
  js_cmd="jco componentize tests/plugins/js-webhook/plugin.js --wit $root/wit --world-name channel -o $js_out"
  if needs_build "$js_out" "$js_version: $js_cmd" tests/plugins/js-webhook wit scripts/build-plugins.sh; then
    echo "==> building $js_out ($js_version)" >&2
    # Work-around: jco 1.35.0 reads the WIT with a wasm build of wasm-tools
    # run on @bytecodealliance/preview2-shim 0.26, which gives a guest no
    # preopened directory by default, so `--wit` fails with "failed to get
    # path metadata: No such file or directory (os error 44)". Preload a
    # module that preopens this repository in each shim that has none (a
    # no-op once jco sets its own). Main thread only: the shims' worker
    # threads inherit NODE_OPTIONS, and loading a shim there starts another
    # worker, and so on until V8 runs out of memory.
    jco_modules=$(cd "$(dirname "$NOTIFY_JCO")/.." && pwd)
    preload="$scratch/jco-preopens.mjs"
    {
      echo 'import { isMainThread } from "node:worker_threads";'
      echo 'if (isMainThread) {'
      find "$jco_modules" -path '*/preview2-shim/dist/nodejs/filesystem.js' -print | while read -r shim; do
        printf '  { const s = await import(%s);\n' "$(printf '"file://%s"' "$shim")"
        printf '    if (s._setPreopens && s.preopens.getDirectories().length === 0) s._setPreopens({ %s: %s }); }\n' \
          "\"$root\"" "\"$root\""
      done
      echo '}'
    } > "$preload"
    NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--import=file://$preload" \
      "$NOTIFY_JCO" componentize tests/plugins/js-webhook/plugin.js \
      --wit "$root/wit" --world-name channel -o "$scratch/js-webhook.wasm" >/dev/null
    mv "$scratch/js-webhook.wasm" "$js_out"
    record_build "$js_out" "$js_version: $js_cmd"
  else
    echo "==> $js_out is up to date" >&2
  fi
fi

ls -l plugins/*.wasm $($with_tests && echo tests/plugins/*.wasm) | awk '{print "    " $5 " bytes  " $9}' >&2
