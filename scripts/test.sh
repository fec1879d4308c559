#!/usr/bin/env bash
# Sets up a fresh machine and runs every check: formatting, clippy (warnings are errors), all tests.
source "$(dirname "$0")/env.sh"
atlas_install_deps
cd "$ATLAS_ROOT"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (release profile, -D warnings)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

say "cargo test (release profile)"
cargo test --release --locked --workspace
