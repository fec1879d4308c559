#!/usr/bin/env bash
# Prints Atlas's performance table with its references measured in the same run.
# Options go to atlas-bench (e.g. --size 256MiB for a quick run); ATLAS_BENCH_DIR picks the scratch
# folder on the disk to measure (default ~/.cache/atlas/bench, about 4 GiB free needed).
source "$(dirname "$0")/env.sh"
atlas_install_deps
cd "$ATLAS_ROOT"
atlas_build
exec "$CARGO_TARGET_DIR/release/atlas-bench" "$@"
