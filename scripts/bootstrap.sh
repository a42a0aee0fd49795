#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (run as root, or with sudo available):
#   scripts/bootstrap.sh run   install what is missing, build, run the main job (tiny model, CPU)
#   scripts/bootstrap.sh test  install what is missing, build, run every test
#   scripts/bootstrap.sh build install what is missing, build
#   scripts/bootstrap.sh sanitize  the same with clang, ASan and UBSan in build-asan: every
#                              test, then each fuzz target (tests/fuzz) for JANUS_FUZZ_SECONDS
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
  liblua5.4-dev libreadline-dev nlohmann-json3-dev libssl-dev libpcre2-dev libutf8proc-dev libcpp-httplib-dev
  tmux iproute2 procps python3 python3-venv
  python3-dev python3-numpy pybind11-dev python3-pytest
)
# The sanitizer build: clang and its runtimes (ASan, UBSan, libFuzzer).
[ "$mode" = sanitize ] && packages+=(clang libclang-rt-14-dev)
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

jobs=${JANUS_JOBS:-$(nproc)}
if [ "$mode" = sanitize ]; then
  # -O1 keeps the sanitized tests fast enough and the stacks readable; the header check
  # already ran in the normal build.
  build=${JANUS_BUILD_DIR:-build-asan}
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DJANUS_CUDA=OFF -DJANUS_FUZZ=ON -DJANUS_CHECK_HEADERS=OFF
  fi
else
  build=${JANUS_BUILD_DIR:-build}
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${JANUS_BUILD_TYPE:-Release}
  fi
fi
cmake --build "$build" -j "$jobs"

# Every test under the sanitizers, then each fuzz target from its committed corpus (new
# inputs go to a scratch folder; a crash leaves its input in $build/fuzz/artifacts).
sanitize() {
  # CAF and libfabric keep allocations until exit by design: leaks are not reported.
  # UBSan halts on its first report but for the ones in CAF's headers (tests/fuzz/ubsan.supp).
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$here/tests/fuzz/ubsan.supp
  # install_package builds the example out of tree with the system compiler, which cannot
  # link against sanitized libraries; the normal build runs it.
  (cd "$build" && ctest --output-on-failure -j "$jobs" -E '^install_package$' "$@")
  local seconds=${JANUS_FUZZ_SECONDS:-30} summary=() target name scratch log
  mkdir -p "$build/fuzz/artifacts"
  for target in "$build"/fuzz/fuzz_*; do
    name=$(basename "$target")
    scratch=$(mktemp -d)
    log="$build/fuzz/$name.log"
    echo "sanitize: $name for ${seconds}s"
    if ! "$target" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 -artifact_prefix="$build/fuzz/artifacts/$name-" \
         "$scratch" "tests/fuzz/corpus/$name" >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "sanitize: $name failed (log: $log)" >&2
      exit 1
    fi
    rm -rf "$scratch"
    summary+=("$(awk -v n="$name" '/stat::number_of_executed_units/ {runs=$2} /DONE/ {for (i = 1; i < NF; ++i) if ($i == "exec/s:") eps=$(i+1); for (i = 1; i < NF; ++i) if ($i == "cov:") cov=$(i+1)}
      END {printf "%-22s %10s runs %8s exec/s  cov %s", n, runs, eps, cov}' "$log")")
  done
  printf 'sanitize: %s\n' "${summary[@]}"
}

# The Python packages the tests drive janus serve with (tests/serving/serve_openai_test.py):
# a venv in the build folder, pinned versions, made once.
test_venv() {
  local venv="$build/pyenv" want=(openai==3.63.0 prometheus_client==0.26.0 tokenizers==0.23.3)
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "${want[0]}"; then
    echo "bootstrap: making $venv (${want[*]})"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "${want[@]}"
  fi
}
if [ "$mode" = test ]; then
  test_venv
  # tests/python/test_wheel.py: `pip install .` from a clean clone into a fresh venv (PyPI,
  # the runtime built again: 11 minutes on 2 shared cores). JANUS_TEST_WHEEL=0 leaves it out.
  export JANUS_TEST_WHEEL=${JANUS_TEST_WHEEL:-1}
fi

case "$mode" in
  build) ;;
  run)   exec "$build/janus" run "$@" ;;
  test)  cd "$build" && exec ctest --output-on-failure -j "$jobs" "$@" ;;
  sanitize) sanitize "$@" ;;
  *)     echo "usage: scripts/bootstrap.sh run|test|build|sanitize [args...]" >&2; exit 2 ;;
esac
