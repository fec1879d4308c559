# Shared setup for Atlas's scripts: sourced, not run.
# Installs what a fresh machine lacks and points cargo at a target folder outside the clone, so
# repeated runs (and fresh clones on the same machine) reuse RocksDB's C++ build.

set -euo pipefail

ATLAS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/atlas/target}"
export ATLAS_BIN="$CARGO_TARGET_DIR/release/atlas"
mkdir -p "$CARGO_TARGET_DIR"

say() { printf '==> %s\n' "$*" >&2; }

# Installs Debian packages (as root, or with sudo): atlas_apt_install "why" pkg...
atlas_apt_install() {
  local why="$1"
  shift
  say "installing $* ($why)"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "error: $* missing and not root; install them (apt-get install $*) and rerun" >&2
      exit 1
    fi
  fi
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
  fi
}

# ffmpeg makes the sample videos; Chromium and its WebDriver play them in the browser test.
atlas_install_media_deps() {
  local missing=()
  command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
  if [ "${1:-}" = "--browser" ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    atlas_apt_install "for sample videos and the browser test" "${missing[@]}"
  fi
}

# True when the C library that bindgen loads at run time (libclang.so, libclang-N.so or
# libclang.so.N) is on the machine. libclang-cpp.so.N, the C++ interface library that some images
# ship on their own, is a different library and does not count.
atlas_have_libclang() {
  local dir f
  for dir in ${LIBCLANG_PATH:-} /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu /lib/*-linux-gnu /usr/lib64 /usr/lib; do
    for f in "$dir"/libclang.so "$dir"/libclang.so.[0-9]* "$dir"/libclang-[0-9]*.so*; do
      [ -e "$f" ] && return 0
    done
  done
  return 1
}

# RocksDB's bindings are generated with libclang; its C++ needs a compiler.
atlas_install_deps() {
  local missing=()
  atlas_have_libclang || missing+=(libclang-dev)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v cc >/dev/null 2>&1 || missing+=(gcc)
  if [ "${#missing[@]}" -gt 0 ]; then
    atlas_apt_install "needed to build RocksDB" "${missing[@]}"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install a stable Rust toolchain (https://rustup.rs) and rerun" >&2
    exit 1
  fi
}

# The Solidity compiler (solc-js) and, later, anvil come from the npm registry, pinned by
# contracts/package-lock.json and installed into contracts/node_modules.
atlas_install_contract_deps() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    atlas_apt_install "to compile the contracts" nodejs npm
  fi
  say "installing the contracts' npm packages (pinned by contracts/package-lock.json)"
  (cd "$ATLAS_ROOT/contracts" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
}

# Builds the atlas binary (release: the same profile tests and benchmarks use, so RocksDB is
# compiled once per target folder).
atlas_build() {
  if [ ! -d "$CARGO_TARGET_DIR/release/build" ]; then
    say "first build: compiling RocksDB from source takes 10-25 minutes on 2 cores"
  fi
  # Every binary of the workspace at once: the same feature set as the tests build, so the demo,
  # the benchmarks and the tests share one compiled RocksDB (a `-p` build resolves features
  # differently and would compile it again).
  (cd "$ATLAS_ROOT" && cargo build --release --locked --workspace --bins)
}
