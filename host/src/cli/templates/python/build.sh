#!/usr/bin/env bash
# Builds {{name}}.wasm, the component notify-host loads, next to this script,
# with componentize-py 0.25.1: $NOTIFY_COMPONENTIZE_PY when set, else
# componentize-py on PATH.
set -euo pipefail
cd "$(dirname "$0")"

version=0.25.1
tool="${NOTIFY_COMPONENTIZE_PY:-}"
if [[ -z $tool ]]; then
  if command -v componentize-py >/dev/null 2>&1; then
    tool=componentize-py
  else
    echo "error: componentize-py is not installed (and NOTIFY_COMPONENTIZE_PY is not set)." >&2
    echo "Install it with:  pip install componentize-py==$version" >&2
    exit 1
  fi
fi
if ! "$tool" --version 2>/dev/null | grep -q "$version"; then
  echo "warning: $tool is not componentize-py $version (this skeleton was made for it)" >&2
fi

# The bindings (the `wit_world` package) are generated from wit/ each time.
"$tool" --wit-path wit --world channel componentize app -o {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm" >&2
