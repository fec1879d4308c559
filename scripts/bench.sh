#!/usr/bin/env bash
# Prints Atlas's performance table with its references measured in the same run.
# Options go to atlas-bench (e.g. --size 256MiB for a quick run); ATLAS_BENCH_DIR picks the scratch
# folder on the disk to measure (default ~/.cache/atlas/bench, about 4 GiB free needed).
#   scripts/bench.sh --gas   prints the gas of the contracts' on-chain checks instead (in-process EVM)
source "$(dirname "$0")/env.sh"
atlas_install_deps
cd "$ATLAS_ROOT"
if [ "${1:-}" = "--gas" ]; then
  say "cargo build (release): atlas-gas"
  cargo build --release --locked --workspace --bins --features atlas-evm/gas-bench
  exec "$CARGO_TARGET_DIR/release/atlas-gas"
fi
atlas_build
exec "$CARGO_TARGET_DIR/release/atlas-bench" "$@"
