#!/usr/bin/env bash
# Fuzzes every target in fuzz/harness with libFuzzer for SECONDS each (default 60), growing the
# corpus kept in fuzz/corpus/<target>; an input that crashes a target is saved in
# fuzz/regressions/<target>/ (fix the cause, keep the input: `cargo test -p atlas-fuzz` replays
# both folders on stable Rust). Installs cargo-fuzz if missing.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
source "$(dirname "$0")/env.sh"
atlas_install_deps
cd "$ATLAS_ROOT"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
# cargo-fuzz passes nightly-only flags (sanitizer, coverage); use nightly if installed, else
# let the stable compiler accept them.
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

say "writing the seed inputs"
atlas_build
"$CARGO_TARGET_DIR/release/atlas-fuzz-seed"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz/harness/fuzz_targets | sed 's/\.rs$//')
fi
# The harness links RocksDB. Its C++ takes no Rust flags, so the library the project's own build
# compiled serves the instrumented build too, instead of compiling it again for a quarter hour.
rocksdb="$(ls -t "$CARGO_TARGET_DIR"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)"
if [ -n "$rocksdb" ]; then
    export ROCKSDB_LIB_DIR="$(dirname "$rocksdb")" ROCKSDB_STATIC=1
    export RUSTFLAGS="${RUSTFLAGS:-} -Clink-arg=-lstdc++"
fi
# The harness builds with sanitizer flags: its own target folder, beside the project's.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR%/}-fuzz"
for t in "${targets[@]}"; do
    say "fuzzing $t for ${seconds}s"
    mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t"
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz/harness "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/regressions/$t/"
    # Keep the corpus small: only inputs that add coverage.
    tmp="$(mktemp -d)"
    cargo "${toolchain[@]}" fuzz cmin --fuzz-dir fuzz/harness "$t" "fuzz/corpus/$t" -- -artifact_prefix="$tmp/" >/dev/null 2>&1 || true
    rm -rf "$tmp"
done
say "corpus: $(find fuzz/corpus -type f | wc -l) inputs; regressions: $(find fuzz/regressions -type f | wc -l)"
