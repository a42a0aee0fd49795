#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (run as root, or with sudo available):
#   scripts/bootstrap.sh run   install what is missing, build, run the main job (tiny model, CPU)
#   scripts/bootstrap.sh test  install what is missing, build, run every test
#   scripts/bootstrap.sh build install what is missing, build
# Everything the project needs is named here, so a green run never hides a step done by hand.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
mode=${1:-run}
shift || true

# Debian packages the build, the runtime and the tests use (README "Dependencies" says why each).
packages=(
  build-essential cmake ninja-build pkg-config git
  libcaf-dev libcapnp-dev capnproto libfabric-dev libfabric-bin doctest-dev
  liblua5.4-dev libreadline-dev nlohmann-json3-dev libssl-dev
  tmux iproute2 procps python3
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=${JANUS_BUILD_DIR:-build}
jobs=${JANUS_JOBS:-$(nproc)}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${JANUS_BUILD_TYPE:-Release}
fi
cmake --build "$build" -j "$jobs"

case "$mode" in
  build) ;;
  run)   exec "$build/janus" run "$@" ;;
  test)  cd "$build" && exec ctest --output-on-failure -j "$jobs" "$@" ;;
  *)     echo "usage: scripts/bootstrap.sh run|test|build [args...]" >&2; exit 2 ;;
esac
