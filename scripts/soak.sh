#!/usr/bin/env bash
# A soak run (not part of the tests): a testnet under pins, gets, gateway readers and slow
# clients, with providers and the ledger killed and restarted at random, a provider on a small
# disk that fills, and slot files corrupted behind their holders' backs; then every fault stops,
# the network repairs, and every video must read back identical, tokens be conserved, disks
# match the ledger and no process have grown past its limit. Prints a summary table.
#   scripts/soak.sh [MINUTES]        (default 30; ATLAS_SOAK_DIR picks the scratch folder)
source "$(dirname "$0")/env.sh"
atlas_install_deps
cd "$ATLAS_ROOT"

minutes="${1:-30}"
if ! [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: scripts/soak.sh [MINUTES]" >&2
    exit 2
fi
atlas_build
exec "$CARGO_TARGET_DIR/release/atlas-soak" \
    --atlas "$CARGO_TARGET_DIR/release/atlas" \
    --minutes "$minutes" \
    --dir "${ATLAS_SOAK_DIR:-$HOME/.cache/atlas/soak}"
