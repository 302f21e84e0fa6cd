#!/usr/bin/env bash
# Builds the ioc-forwarder packages from this source tree.
#
#   packaging/build.sh [deb|rpm|all]     (default: all)
#
# Output: $PACKAGES_DIR (default: <cargo target dir>/packages/)
#   ioc-forwarder_<version>-1_<arch>.deb         the package (stripped binary)
#   ioc-forwarder-dbgsym_<version>-1_<arch>.ddeb  its debug symbols
#   ioc-forwarder-<version>-1.<arch>.rpm         the rpm (stripped binary)
#
# Layout and metadata: [package.metadata.deb] and [package.metadata.generate-rpm] in Cargo.toml.
# Needs: cargo, strip (binutils); cargo-deb and cargo-generate-rpm are installed with
# `cargo install --locked` when missing. Both packages use one release build (cargo's
# [profile.release]; CARGO_TARGET_DIR is honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case "$what" in
    deb | rpm | all) ;;
    -h | --help)
        sed -n '2,14p' "$0"
        exit 0
        ;;
    *)
        echo "usage: packaging/build.sh [deb|rpm|all]" >&2
        exit 2
        ;;
esac

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'packaging/build.sh: error: %s\n' "$*" >&2
    exit 1
}

target_dir=$(cargo metadata --no-deps --format-version 1 |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find cargo's target directory (cargo metadata)"
out=${PACKAGES_DIR:-$target_dir/packages}
mkdir -p "$out"

# Installs a cargo subcommand from crates.io when it is not on PATH.
need() {
    local bin=$1 crate=$2
    if ! command -v "$bin" >/dev/null 2>&1; then
        say "$bin not found: cargo install --locked $crate (compiles from crates.io, a few minutes)"
        cargo install --locked "$crate"
    fi
}

build_deb() {
    need cargo-deb cargo-deb
    say "building the .deb (cargo deb: release build, then package)"
    # cargo-deb strips its own copy of the binary; target/release is left as it is.
    cargo deb --output "$out/"
}

build_rpm() {
    need cargo-generate-rpm cargo-generate-rpm
    command -v strip >/dev/null 2>&1 || die "strip not found (install binutils)"
    say "building the release binary for the .rpm"
    cargo build --release --bin ioc-forwarder
    # cargo-generate-rpm packages target/release/ioc-forwarder as it is, debug info and all
    # ([profile.release] debug = 1). Package a stripped copy instead: --target-dir makes it read
    # the asset "target/release/ioc-forwarder" from the staging directory, and the binary in the
    # shared target/release stays untouched.
    local stage="$target_dir/rpm-stage"
    rm -rf "$stage"
    mkdir -p "$stage/release"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note \
        -o "$stage/release/ioc-forwarder" "$target_dir/release/ioc-forwarder"
    say "building the .rpm (cargo generate-rpm)"
    cargo generate-rpm --target-dir "$stage" --output "$out/"
}

case "$what" in
    deb) build_deb ;;
    rpm) build_rpm ;;
    all)
        build_deb
        build_rpm
        ;;
esac

say "packages in $out:"
ls -l "$out" >&2
