#!/usr/bin/env bash
# Builds the channel plugins as WebAssembly components and drops them where
# config.toml expects them: plugins/mailgun.wasm and plugins/twilio.wasm.
# With --with-test-plugins it also builds the test suite's hostile plugins
# into tests/plugins/*.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

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
ls -l plugins/*.wasm $($with_tests && echo tests/plugins/*.wasm) | awk '{print "    " $5 " bytes  " $9}' >&2
