#!/usr/bin/env bash
# Compiles the Solidity contracts in contracts/src with the pinned solc (paris EVM) into contracts/out.
#   scripts/contracts.sh           rebuild contracts/out (commit it: a plain cargo build uses it)
#   scripts/contracts.sh --check   fail if contracts/out differs from a fresh compile
source "$(dirname "$0")/env.sh"
case "${1:-}" in
  "" | --check) ;;
  -h | --help)
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "error: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac
atlas_install_contract_deps
cd "$ATLAS_ROOT/contracts"
node build.mjs ${1:+"$1"}
