#!/usr/bin/env bash
# The Atlas demo: from a fresh clone, set up, build, and show a video surviving the loss of slots.
#
# Until the network lands this runs locally: it makes a sample video, erasure-codes it into 4+2
# slots with a signed manifest, destroys two slots (one deleted, one corrupted), verifies the damage
# is detected, and rebuilds the video byte for byte from what is left.
source "$(dirname "$0")/env.sh"
atlas_install_deps

DEMO_DIR="${ATLAS_DEMO_DIR:-$HOME/.cache/atlas/demo}"
export ATLAS_HOME="$DEMO_DIR/home"

# A real, playable sample video. ffmpeg draws a 20-second test pattern with a tone.
if ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing ffmpeg (to make the sample video)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  fi
fi

atlas_build
atlas() { "$ATLAS_BIN" "$@"; }

rm -rf "$DEMO_DIR/encoded" "$DEMO_DIR/rebuilt.mp4"
mkdir -p "$DEMO_DIR"
VIDEO="$DEMO_DIR/sample.mp4"
if [ ! -s "$VIDEO" ]; then
  if command -v ffmpeg >/dev/null 2>&1; then
    say "making a sample video: $VIDEO"
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
      -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
      -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -movflags +faststart "$VIDEO"
  else
    say "ffmpeg unavailable: using 24 MiB of random bytes as the sample"
    head -c $((24 << 20)) /dev/urandom > "$VIDEO"
  fi
fi

[ -f "$ATLAS_HOME/key" ] || { say "creating the creator's key"; atlas key gen >/dev/null; }
say "creator key: $(atlas key show)"

say "encoding $(basename "$VIDEO") as 4 data + 2 parity slots with 256 KiB shards"
ID=$(atlas encode "$VIDEO" --out "$DEMO_DIR/encoded" --shard-size 256KiB)
say "object id: $ID"
ls -l "$DEMO_DIR/encoded" >&2

say "verifying every slot"
atlas verify "$DEMO_DIR/encoded"

say "losing two slots: slot 1 deleted, slot 4 corrupted"
rm "$DEMO_DIR/encoded/slot-001.data"
printf 'CORRUPTION' | dd of="$DEMO_DIR/encoded/slot-004.data" bs=1 seek=100000 conv=notrunc status=none
atlas verify "$DEMO_DIR/encoded" || say "verify named the damaged slots (exit $?), as it should"

say "rebuilding the video from the 4 slots left"
atlas decode "$DEMO_DIR/encoded" --out "$DEMO_DIR/rebuilt.mp4"
if cmp -s "$VIDEO" "$DEMO_DIR/rebuilt.mp4"; then
  say "rebuilt video is byte-for-byte identical: $DEMO_DIR/rebuilt.mp4"
else
  echo "error: rebuilt video differs from the original" >&2
  exit 1
fi
