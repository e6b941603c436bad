#!/usr/bin/env bash
# Builds {{name}}.wasm, the component notify-host loads, next to this script,
# with jco 1.35.0 (`jco componentize`, which needs componentize-js):
# $NOTIFY_JCO when set, else jco on PATH.
set -euo pipefail
cd "$(dirname "$0")"

version=1.35.0
tool="${NOTIFY_JCO:-}"
if [[ -z $tool ]]; then
  if command -v jco >/dev/null 2>&1; then
    tool=jco
  else
    echo "error: jco is not installed (and NOTIFY_JCO is not set)." >&2
    echo "Install it with:  npm install @bytecodealliance/jco@$version @bytecodealliance/componentize-js@0.22" >&2
    echo "then run: NOTIFY_JCO=\$PWD/node_modules/.bin/jco ./build.sh" >&2
    exit 1
  fi
fi
if [[ "$("$tool" --version 2>/dev/null)" != "$version" ]]; then
  echo "warning: $tool is not jco $version (this skeleton was made for it)" >&2
fi

# jco-preopens.mjs: see its header (a workaround for jco 1.35.0's WASI shim).
# --disable http fetch-event: a plugin does no I/O (the host sends its
# requests), so the component need not import wasi:http at all.
NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--import=./jco-preopens.mjs" \
  "$tool" componentize app.js --wit wit --world-name channel \
  --disable http fetch-event -o {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm" >&2
