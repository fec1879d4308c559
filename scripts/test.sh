#!/usr/bin/env bash
# Sets up a fresh machine and runs every check: formatting, clippy (warnings are errors), all tests.
source "$(dirname "$0")/env.sh"
atlas_install_deps
atlas_install_media_deps --browser
cd "$ATLAS_ROOT"

say "cargo fmt --check"
cargo fmt --all -- --check

say "contracts: a fresh compile matches contracts/out"
bash scripts/contracts.sh --check

say "cargo clippy (release profile, -D warnings)"
cargo clippy --release --locked --workspace --all-targets --features atlas-evm/gas-bench -- -D warnings

say "cargo test (release profile)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --locked --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary: cargo prints a summary per binary (doc tests last,
# often with nothing in them), so sum them.
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
