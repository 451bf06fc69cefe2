#!/usr/bin/env bash
# Make sure a Rust toolchain that can build wasm32-unknown-unknown cdylibs is installed.
#
# Order of preference (see docs/feature-abi.md and the toolchain notes in the README):
#   1. a rustup toolchain that already has the wasm32-unknown-unknown target;
#   2. Debian's rustc/cargo (1.63) + libstd-rust-dev-wasm32 + lld-14, installed with apt when missing;
#   3. otherwise stop with a message that says exactly what to install.
# Idempotent and silent when everything is already there.
set -euo pipefail

have_rustup_wasm() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx 'wasm32-unknown-unknown'
}

have_debian_wasm() {
    [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] &&
        [ -d /usr/lib/rustlib/wasm32-unknown-unknown ] &&
        { command -v rust-lld >/dev/null 2>&1 || command -v lld-14 >/dev/null 2>&1; }
}

if have_rustup_wasm || have_debian_wasm; then
    exit 0
fi

pkgs="rustc cargo libstd-rust-dev-wasm32 lld-14"
if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: the Rust wasm32 toolchain is missing and installing it needs root: run 'apt-get install -y $pkgs' as root" >&2
            exit 1
        fi
    fi
    echo "installing the Rust wasm32 toolchain with apt: $pkgs" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    if have_debian_wasm; then exit 0; fi
fi

cat >&2 <<MSG
error: no Rust toolchain that can target wasm32-unknown-unknown was found.
Install one of:
  - Debian/Ubuntu: apt-get install -y --no-install-recommends $pkgs
  - rustup:        rustup target add wasm32-unknown-unknown
MSG
exit 1
