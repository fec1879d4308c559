#!/usr/bin/env bash
# The Atlas demo: from a fresh clone, set up, build, and run a local network that keeps a video
# whole while a provider dies.
#
# It starts a ledger, 8 providers and a gateway as separate processes on loopback, pins a real
# sample video (4 data + 2 parity slots on 6 providers), shows its status, kills one holder, reads
# the video back byte for byte from the others, and leaves the network running with the gateway's
# URL to watch the video in a browser. `atlas testnet down --dir DIR` stops it; `up` resumes.
source "$(dirname "$0")/env.sh"
atlas_install_deps
atlas_install_media_deps
atlas_build
atlas() { "$ATLAS_BIN" "$@"; }

DEMO_DIR="${ATLAS_DEMO_DIR:-$HOME/.cache/atlas/demo}"
NET="$DEMO_DIR/testnet"
mkdir -p "$DEMO_DIR"

VIDEO="$DEMO_DIR/sample.mp4"
if [ ! -s "$VIDEO" ]; then
  say "making a sample video (20 s, 720p, test pattern with a tone): $VIDEO"
  ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -movflags +faststart "$VIDEO"
fi

say "starting the testnet in $NET: a ledger, 8 providers and a gateway"
atlas testnet up --dir "$NET" --providers 8
# shellcheck disable=SC1091
source "$NET/testnet.env"

say "pinning $(basename "$VIDEO") as 4 data + 2 parity slots"
ID=$(atlas pin "$VIDEO" -q)
say "object id: $ID"

say "its status: holders, slot states, escrow"
atlas status "$ID"

# Kill the holder of slot 0 as a crash would (SIGKILL), found by its key.
HOLDER=$(atlas status "$ID" --json | sed -n 's/.*"holder": *"\([0-9a-f]*\)".*/\1/p' | head -1)
VICTIM=""
for home in "$NET"/provider-*; do
  if [ "$(atlas --home "$home" key show)" = "$HOLDER" ]; then VICTIM="$home"; fi
done
if [ -z "$VICTIM" ]; then
  echo "error: the holder of slot 0 is not one of this testnet's providers" >&2
  exit 1
fi
say "killing $(basename "$VICTIM"), which holds slot 0"
kill -KILL "$(cat "$VICTIM/pid")"

say "reading the video back from the providers that are left"
rm -f "$DEMO_DIR/read-back.mp4"
atlas get "$ID" -o "$DEMO_DIR/read-back.mp4"
if cmp -s "$VIDEO" "$DEMO_DIR/read-back.mp4"; then
  say "the video read back byte-for-byte identical with a holder dead: $DEMO_DIR/read-back.mp4"
else
  echo "error: the video read back differs from the original" >&2
  exit 1
fi

atlas testnet status --dir "$NET"
cat >&2 <<EOF

==> Watch it: $ATLAS_GATEWAY/  (the gateway rebuilds slot 0 from parity as it streams)
==> Direct link: $ATLAS_GATEWAY/v1/objects/$ID
==> Use this network from a shell:  source $NET/testnet.env
==> If nobody repairs it, the dead holder misses its proofs, is slashed, and a spare provider
==> rebuilds its slot: watch \`atlas status $ID\` over the next epochs.
==> Stop everything:  $ATLAS_BIN testnet down --dir $NET   (\`up\` resumes; nothing is lost)
EOF
