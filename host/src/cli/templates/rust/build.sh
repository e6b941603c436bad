#!/usr/bin/env bash
# Builds {{name}}.wasm, the component notify-host loads, next to this script.
set -euo pipefail
cd "$(dirname "$0")"

target=wasm32-wasip2
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
  echo "==> adding the $target target (rustup)" >&2
  rustup target add "$target"
fi

cargo build --release --target "$target"
cp "${CARGO_TARGET_DIR:-target}/$target/release/{{crate_name}}.wasm" {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm" >&2
