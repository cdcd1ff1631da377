#!/usr/bin/env bash
# Fuzzing in CI: builds the cargo-fuzz targets under fuzz/ and runs each for a short
# while from its committed corpus. A panic, a failed assertion, a sanitizer report or a
# leak fails CI; libFuzzer writes the input to fuzz/artifacts/<target>/ and it is printed.
#
# HERD_FUZZ_SECONDS sets each target's run (default 20). HERD_FUZZ_BUILD is how to
# build: `--dev` by default, quick to build (about 2 minutes cold, against about 6 for
# an optimised build) and fast enough for a short run; for a long local run, optimise:
#   HERD_FUZZ_BUILD=--release HERD_FUZZ_SECONDS=300 .ci/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${HERD_FUZZ_SECONDS:-20}

# cargo-fuzz passes nightly-only -Z flags (the sanitizer, sancov); this lets the stable
# toolchain accept them.
export RUSTC_BOOTSTRAP=1
# fuzz/ is its own workspace with its own lock file; it builds into its own target dir
# so that its instrumented artifacts never mix with the main build's.
export CARGO_TARGET_DIR="$PWD/fuzz/target"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2

cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# The lock file is committed; refuse to run if the build would change it. It goes stale
# whenever a dependency of the herd crates the targets use changes.
if ! cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null; then
    echo "fuzz/Cargo.lock is behind the herd crates' dependencies: run" >&2
    echo "  cargo metadata --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null" >&2
    echo "and commit fuzz/Cargo.lock" >&2
    exit 1
fi

# New inputs the runs find go to a scratch directory; the committed corpus is only read.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
build=("${HERD_FUZZ_BUILD:---dev}")
cargo fuzz build "${build[@]}"
for target in $(cargo fuzz list); do
    echo "-- fuzz $target for ${seconds}s"
    mkdir -p "$scratch/$target"
    # Tokens over 8 KiB are refused for their length; inputs a little longer reach that.
    if ! cargo fuzz run "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=9000 -print_final_stats=1 2>&1 | tail -n 40; then
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/:" >&2
        ls -l "fuzz/artifacts/$target/" >&2 || true
        exit 1
    fi
done
