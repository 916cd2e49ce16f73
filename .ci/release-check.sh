#!/usr/bin/env bash
# The release binaries, checked:
#  1. `cargo build --release` makes a binary of at most 12 MiB.
#  2. scripts/release builds the static x86_64 and aarch64 (musl) binaries
#     into dist/ (cargo-zigbuild, zig from PyPI).
#  3. The x86_64 one prints `tars --version` and serves /health over TLS
#     (curl -k) from a throwaway config, then stops on SIGTERM.
#  4. The aarch64 one does the same under qemu-aarch64 (user-mode emulation),
#     installed from Debian's packages when apt-get is there; without it the
#     run is SKIPPED (it was still built).
# RELEASE_PROFILE picks scripts/release's profile (default `dist`; CI may use
# `release`, about half the build time: see README "Binaries").
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BYTES=$((12 * 1024 * 1024))
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n--> %s\n' "$*"; }
fail() {
    echo "release-check FAILED: $*" >&2
    exit 1
}

step "cargo build --release (size budget $MAX_BYTES bytes)"
start=$SECONDS
cargo build --release --locked --bin tars
size=$(stat -c %s target/release/tars)
echo "target/release/tars: $size bytes ($((size / 1024)) KiB), built in $((SECONDS - start)) s"
[ "$size" -le "$MAX_BYTES" ] || fail "target/release/tars is $size bytes, over 12 MiB ($MAX_BYTES)"

step "scripts/release (profile ${RELEASE_PROFILE:-dist})"
start=$SECONDS
scripts/release
echo "scripts/release took $((SECONDS - start)) s"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
(cd dist && sha256sum -c SHA256SUMS)

# run_checks NAME RUNNER... : --version, then serve /health and stop.
run_checks() {
    local name="$1"
    shift
    local bin="$PWD/dist/tars-$version-$name"
    local out
    out="$("$@" "$bin" --version)" || fail "$name: tars --version failed"
    [ "$out" = "tars $version" ] || fail "$name: tars --version printed '$out', not 'tars $version'"
    echo "$name: --version: $out"

    local dir="$work/$name" port
    mkdir -p "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    cat >"$dir/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "data"
shutdown_grace_secs = 2
[tls]
cert = "certs/tars.crt"
key = "certs/tars.key"
[ollama]
host = "http://127.0.0.1:9"
TOML
    "$@" "$bin" --config "$dir/config.toml" >"$dir/log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    local code="" deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        code="$(curl -ks -o "$dir/health" -w '%{http_code}' --max-time 5 "https://127.0.0.1:$port/health" || true)"
        [ "$code" = 200 ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    [ "$code" = 200 ] || fail "$name: GET /health did not answer 200 (last: '$code'); log:
$(cat "$dir/log")"
    echo "$name: GET /health: 200 $(cat "$dir/health")"
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    [ "$rc" = 0 ] || fail "$name: exit code $rc after SIGTERM; log:
$(cat "$dir/log")"
    echo "$name: stopped cleanly on SIGTERM"
}

step "x86_64 static binary: --version, /health"
file_info="$(readelf -h "dist/tars-$version-x86_64-unknown-linux-musl" | sed -n 's/ *Machine: *//p')"
echo "machine: $file_info"
run_checks x86_64-unknown-linux-musl env

step "aarch64 static binary: --version, /health under qemu-aarch64"
file_info="$(readelf -h "dist/tars-$version-aarch64-unknown-linux-musl" | sed -n 's/ *Machine: *//p')"
echo "machine: $file_info"
[ "$file_info" = "AArch64" ] || fail "the aarch64 binary is for '$file_info'"
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
if [ -z "$qemu" ] && command -v apt-get >/dev/null 2>&1; then
    as_root=""
    if [ "$(id -u)" -ne 0 ]; then as_root="sudo -n"; fi
    if timeout 600 $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null 2>&1 ||
        { timeout 600 $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
            timeout 600 $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null 2>&1; }; then
        qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
    fi
fi
if [ -n "$qemu" ]; then
    run_checks aarch64-unknown-linux-musl "$qemu"
else
    echo "SKIPPED: running the aarch64 binary: no qemu-aarch64 (Debian: qemu-user-static)"
fi

echo
echo "release-check passed"
