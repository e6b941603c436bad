#!/usr/bin/env bash
# Installs the toolchains that build channel plugins in other languages,
# idempotently, under .tools/ (nothing global):
#   - componentize-py 0.25.1 (PyPI), into .tools/plugin-py (a venv), for
#     Python plugins;
#   - jco 1.35.0 with componentize-js (npm registry), into .tools/plugin-js,
#     for JavaScript plugins (needs Node.js 18+ and npm).
# Prints `export NOTIFY_COMPONENTIZE_PY=...` and `export NOTIFY_JCO=...` on
# stdout for the caller to eval. `--python` or `--js` installs only one.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'plugin-toolchains: %s\n' "$*" >&2; }

COMPONENTIZE_PY_VERSION=0.25.1
JCO_VERSION=1.35.0

want_py=true
want_js=true
case "${1:-}" in
  --python) want_js=false ;;
  --js) want_py=false ;;
  "") ;;
  *) log "unknown option $1 (expected --python or --js)"; exit 2 ;;
esac

if $want_py; then
  venv=.tools/plugin-py
  if [[ ! -x $venv/bin/componentize-py ]] || ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
    log "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI) into $venv"
    python3 -m venv "$venv" >&2 || { apt-get install -y -qq python3-venv >&2 && python3 -m venv "$venv" >&2; }
    "$venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
  fi
  printf 'export NOTIFY_COMPONENTIZE_PY=%q\n' "$(cd "$venv/bin" && pwd)/componentize-py"
fi

if $want_js; then
  if ! command -v npm >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      log "installing nodejs and npm (apt-get)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq --no-install-recommends nodejs npm >&2
    else
      log "missing: node and npm; install Node.js 18 or later and run again"
      exit 1
    fi
  fi
  dir=.tools/plugin-js
  jco="$dir/node_modules/.bin/jco"
  if [[ ! -x $jco ]] || [[ "$("$jco" --version 2>/dev/null)" != "$JCO_VERSION" ]]; then
    log "installing jco $JCO_VERSION and componentize-js (npm registry) into $dir"
    mkdir -p "$dir"
    [[ -f $dir/package.json ]] || printf '{ "name": "notify-plugin-js-tools", "private": true }\n' > "$dir/package.json"
    npm install --silent --no-audit --no-fund --prefix "$dir" \
      "@bytecodealliance/jco@$JCO_VERSION" "@bytecodealliance/componentize-js@0.22" >&2
  fi
  printf 'export NOTIFY_JCO=%q\n' "$(cd "$dir/node_modules/.bin" && pwd)/jco"
fi
