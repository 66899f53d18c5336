#!/usr/bin/env bash
# The whole pstar test suite, in one command:
#
#     bash scripts/test.sh
#
# On a fresh Debian 12 machine with the Rust toolchain it installs what the tests need,
# runs every test of the workspace (unit, integration and doc tests), then checks every
# workload in examples/. Extra arguments are passed to the test runner, e.g.
# `bash scripts/test.sh -p pstar-cli`.
#
# Uses cargo-nextest when installed (`cargo install cargo-nextest`), else `cargo test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    printf '\n==> %s\n' "$*" >&2
}

# ---------------------------------------------------------------------------------------
# ensure_packages: the Debian packages the tests need, installed when missing.
#
# Add a package here when a test starts needing it (e.g. redis-server for the Redis
# coordination backend, openssh-server for ssh:// pilots). `apt-get update` only runs
# when something is actually missing, so a machine that has everything stays offline.
# ---------------------------------------------------------------------------------------
REQUIRED_PACKAGES=(
    redis-server       # the Redis coordination backend (tests start their own, on loopback)
    redis-tools        # redis-cli, used by tests to look inside a session
    openssl            # certificates for the rediss:// (TLS) test
    iproute2           # ip netns: an agent on another "host" whose link a test cuts
    openssh-server     # sshd: a key-only sshd on loopback for ssh:// pilots (SshServer)
    openssh-client     # ssh, sftp, ssh-keygen: the client side of those tests
    slurm-wlm          # slurmctld, slurmd, sbatch & co: a fake multi-node cluster (SlurmCluster)
    munge              # munged: Slurm's authentication daemon (each test cluster runs its own)
    gridengine-master  # sge_qmaster and spool tools: a Grid Engine cell per test (SgeCell)
    gridengine-exec    # sge_execd: that cell's execution host
    gridengine-client  # qsub, qstat, qdel, qconf, qacct
    musl-tools         # musl-gcc: the static pstar that ssh:// tests copy (build-static.sh)
    python3-venv       # the Python package's virtual environment (pstar_python below)
)

ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        step "packages: all present${1:+ ($*)}"
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "test.sh: missing packages ${missing[*]}, and not root nor sudo to install them" >&2
            exit 1
        fi
    fi
    step "packages: installing ${missing[*]}"
    "${sudo[@]}" apt-get update
    # The gridengine packages ask (debconf) whether to configure a cell and which host is
    # its master; answer before installing so apt-get does not stop to ask. The tests never
    # use that default cell (scripts/testbed/sge-up.sh makes a cell of its own per test).
    if [[ " ${missing[*]} " == *" gridengine-"* ]]; then
        local host gepkg
        host=$(hostname)
        for gepkg in gridengine-common gridengine-master gridengine-exec gridengine-client; do
            printf '%s shared/gridengineconfig boolean true\n' "$gepkg"
            printf '%s shared/gridenginecell string default\n' "$gepkg"
            printf '%s shared/gridenginemaster string %s\n' "$gepkg" "$host"
        done | "${sudo[@]}" debconf-set-selections
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

ensure_packages ${REQUIRED_PACKAGES[@]+"${REQUIRED_PACKAGES[@]}"}

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------
# ensure_s3_server: s3s-fs, the S3-compatible server of the Pilot-Data tests (S3Server),
# built from crates.io once (~2 to 4 min on 2 cores) and kept in ~/.cargo/bin; skipped
# when that version is there. (0.14.1: later versions need a newer rustc.)
# ---------------------------------------------------------------------------------------
S3S_FS_VERSION=0.14.1

ensure_s3_server() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$S3S_FS_VERSION"; then
        step "s3s-fs $S3S_FS_VERSION: present"
        return 0
    fi
    step "s3s-fs $S3S_FS_VERSION: cargo install s3s-fs --version $S3S_FS_VERSION --features binary --locked"
    cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked
}

ensure_s3_server

# ---------------------------------------------------------------------------------------
# The static pstar: the tests copy it to an SSH host as a pilot's agent.
# ---------------------------------------------------------------------------------------
step "static pstar: scripts/build-static.sh"
PSTAR_STATIC_BIN=$(bash scripts/build-static.sh | tail -n 1)
export PSTAR_STATIC_BIN

# ---------------------------------------------------------------------------------------
# The workspace tests.
# ---------------------------------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
    step "tests: cargo nextest run --workspace${*:+ $*}"
    cargo nextest run --workspace "$@"
    # nextest does not run doc tests.
    step "doc tests: cargo test --workspace --doc"
    cargo test --workspace --doc
else
    step "tests: cargo test --workspace${*:+ $*} (install cargo-nextest for a faster, clearer run)"
    cargo test --workspace "$@"
fi

# ---------------------------------------------------------------------------------------
# The Python package: built from this checkout with `pip install ./python` (maturin from
# PyPI builds the Rust extension) into a virtual environment of its own, then its pytest
# suite (python/tests: local pilots, a real Redis, function units, the seeds' listings).
# The environment is kept in target/ between runs; set PSTAR_PY_VENV to put it elsewhere.
# ---------------------------------------------------------------------------------------
PY_VENV="${PSTAR_PY_VENV:-target/python-venv}"
PY_TEST_PACKAGES=(pytest==9.2.0 pytest-timeout==2.4.0 cloudpickle==3.1.3 mypy==2.4.1)

if [ ! -x "$PY_VENV/bin/python" ]; then
    step "python: virtual environment $PY_VENV"
    python3 -m venv "$PY_VENV"
fi
step "python: pip install ./python (builds the extension with maturin), ${PY_TEST_PACKAGES[*]}"
"$PY_VENV/bin/python" -m pip install -q --upgrade pip
"$PY_VENV/bin/python" -m pip install -q "${PY_TEST_PACKAGES[@]}"
"$PY_VENV/bin/python" -m pip install -q --force-reinstall --no-deps ./python
step "python: the type stubs against the module (mypy stubtest)"
# The description keys are attributes served by __getattr__ at run time (the allowlist).
"$PY_VENV/bin/python" -m mypy.stubtest pstar._pstar --allowlist python/stubtest-allowlist.txt
step "python: pytest python/tests"
# From here, not python/: `import pstar` must be the installed package, not its sources.
"$PY_VENV/bin/python" -m pytest python/tests -q --timeout 600 -p no:cacheprovider

# ---------------------------------------------------------------------------------------
# The examples: every workload file in examples/ must pass `pstar check`.
# (The CLI integration tests also run each of them to the end.)
# ---------------------------------------------------------------------------------------
step "examples: pstar check examples/*.toml examples/resources/*.toml"
shopt -s nullglob
examples=(examples/*.toml examples/resources/*.toml)
if [ "${#examples[@]}" -eq 0 ]; then
    echo "test.sh: no workload files in examples/" >&2
    exit 1
fi
for example in "${examples[@]}"; do
    case "$example" in
        # Pilots outside this machine need a networked store; check names one, as run
        # would (check does not contact it).
        examples/resources/*) store=(--coordination redis://127.0.0.1:6379) ;;
        *) store=() ;;
    esac
    cargo run -q -p pstar-cli -- check "${store[@]}" "$example"
done

step "all tests passed"
