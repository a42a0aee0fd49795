#!/usr/bin/env bash
# Installs a built tree into a temporary prefix, builds examples/embed against the installed
# package out of the tree (find_package(janus) + janus::janus), and runs it: the example
# serves three requests on a disaggregated graph and exits 1 unless every token equals the
# reference engine's. Also checks that only public headers were installed and that each one
# compiles alone with nothing but the installed include path.
#   scripts/check_install.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:?usage: check_install.sh BUILD_DIR}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
inc="$work/prefix/include/janus"
test -f "$inc/actors/deployment.h" || { echo "check_install: actors/deployment.h not installed"; exit 1; }
for private in actors/messages.h actors/actor_common.h gpu/cuda/device.h; do
  if [ -e "$inc/$private" ]; then echo "check_install: private header $private was installed"; exit 1; fi
done
# Each public header alone, with the installed include path only (no CAF, CUDA, Cap'n Proto).
n=0
while IFS= read -r h; do
  rel=${h#"$inc/"}
  printf '#include "%s"\n#include "%s"\nint main() { return 0; }\n' "$rel" "$rel" > "$work/one.cc"
  c++ -std=c++20 -fsyntax-only -I"$inc" "$work/one.cc" || { echo "check_install: $rel does not compile alone"; exit 1; }
  n=$((n + 1))
done < <(find "$inc" -name '*.h' | sort)
echo "check_install: $n public headers compile alone"

cmake -S "$here/examples/embed" -B "$work/embed" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/embed" > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/embed/janus_embed_example"
echo "check_install: the out-of-tree example built against $work/prefix and matched the reference"
