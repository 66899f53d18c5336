#!/usr/bin/env bash
# Builds pstar as one static file (musl libc), to run agents on hosts whose C library is
# older than this machine's or missing: a pilot over SSH copies it there as it is.
#
#     bash scripts/build-static.sh            # release build, debug info stripped
#     PROFILE=dev bash scripts/build-static.sh  # quicker to build, slower to run
#
# Installs what the build needs when it is missing (musl-tools, as root, through apt-get;
# the Rust target x86_64-unknown-linux-musl through rustup), then prints the binary's path
# on its last line. Hand it to `pstar run --agent-binary PATH` (or `agent_binary` in the
# workload's [session], or PSTAR_AGENT_BIN).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE=${PROFILE:-release}
ARCH=$(uname -m)
TARGET="$ARCH-unknown-linux-musl"

if ! command -v musl-gcc >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-static: musl-gcc is missing: install musl-tools (apt-get install musl-tools)" >&2
        exit 1
    fi
    echo "==> installing musl-tools" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "==> adding the Rust target $TARGET" >&2
    rustup target add "$TARGET" >&2
fi

echo "==> cargo build --profile $PROFILE --target $TARGET -p pstar-cli" >&2
# Debug info makes the file several times larger, and it is sent over the network.
CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --profile "$PROFILE" --target "$TARGET" -p pstar-cli >&2

dir=$PROFILE
[ "$PROFILE" = dev ] && dir=debug
binary="${CARGO_TARGET_DIR:-target}/$TARGET/$dir/pstar"
binary=$(cd "$(dirname "$binary")" && pwd)/pstar
if ! "$binary" --version >/dev/null; then
    echo "build-static: $binary does not run" >&2
    exit 1
fi
if ! ldd "$binary" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
    echo "build-static: $binary is not statically linked: $(ldd "$binary" 2>&1 | head -3)" >&2
    exit 1
fi
echo "==> $(du -h "$binary" | cut -f1) $binary" >&2
echo "$binary"
