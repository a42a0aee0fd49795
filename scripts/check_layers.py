#!/usr/bin/env python3
"""Holds the source tree to its layers (docs/architecture.md §1).

Every component is a folder and a CMake library; it may include only itself and the
components below it, so the include graph is a DAG. Public headers (the ones
`cmake --install` ships, cmake/JanusInstall.cmake) must not reach CAF, CUDA, NCCL,
libfabric or Cap'n Proto, directly or through the headers they include.

  scripts/check_layers.py           check; exit 1 naming every offending #include
  scripts/check_layers.py --graph   also print the component graph the includes draw
"""
import os
import re
import sys

# component: (folder, the components it may include directly). Lower layers first.
LAYERS = {
    "base":         ("runtime/base", []),
    "cpu_kernels":  ("gpu/cpu", ["base"]),
    "text":         ("runtime/text", ["base"]),
    "model":        ("runtime/model", ["cpu_kernels"]),
    "scheduling":   ("runtime/scheduling", ["cpu_kernels"]),
    "config":       ("runtime/config", ["model", "scheduling"]),
    "cuda_kernels": ("gpu/cuda", ["cpu_kernels"]),
    "backend":      ("gpu/backend", ["model", "cuda_kernels"]),
    "schemas":      ("schemas", []),
    "transport":    ("transport", ["base", "schemas"]),
    "actors":       ("actors", ["config", "backend", "transport"]),
    "serving":      ("runtime/serving", ["actors", "text"]),
    "console":      ("runtime/console", ["actors"]),
    "cli":          ("runtime/cli", ["serving", "console"]),
    "python":       ("python/src", ["serving", "text"]),
}
PUBLIC = ["runtime/base/", "runtime/text/", "runtime/model/", "runtime/scheduling/", "runtime/config/", "gpu/cpu/",
          "gpu/backend/backend.h", "gpu/backend/cpu_backend.h", "gpu/backend/null_backend.h",
          "gpu/backend/device_routing.h",
          "transport/", "actors/deployment.h", "actors/request_events.h", "actors/node.h"]
FORBIDDEN_IN_PUBLIC = re.compile(r"#include\s*<(caf/|cuda|cublas|nccl|rdma/|capnp/|kj/)")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
SOURCE = (".h", ".cc", ".cu", ".cuh")


def component_of(path):
    best = None
    for name, (folder, _) in LAYERS.items():
        if path.startswith(folder + "/") and (best is None or len(folder) > len(LAYERS[best][0])):
            best = name
    return best


def allowed(name):
    out = {name}
    for dep in LAYERS[name][1]:
        out |= allowed(dep)
    return out


def is_public(path):
    return path.endswith(".h") and any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    files = []
    for folder, _ in LAYERS.values():
        for dirpath, _, names in os.walk(folder):
            files += [os.path.join(dirpath, n) for n in names if n.endswith(SOURCE)]
    includes = {f: INCLUDE.findall(open(f, encoding="utf-8").read()) for f in files}
    errors, edges = [], set()
    for f, incs in sorted(includes.items()):
        a = component_of(f)
        for inc in incs:
            target = inc[: -len(".capnp.h")] + ".capnp" if inc.endswith(".capnp.h") else inc
            b = component_of(target)
            if b is None:
                if os.path.exists(inc):
                    errors.append(f"{f}: includes {inc}, which belongs to no layer")
                continue
            edges.add((a, b))
            if b not in allowed(a):
                errors.append(f"{f}: {a} may not include {inc} ({b}); {a} sees {sorted(allowed(a) - {a})}")
    # Public headers: no heavy or device headers, through any chain of project includes.
    for f in sorted(x for x in files if is_public(x)):
        stack, seen = [f], set()
        while stack:
            h = stack.pop()
            if h in seen or not os.path.exists(h):
                continue
            seen.add(h)
            m = FORBIDDEN_IN_PUBLIC.search(open(h, encoding="utf-8").read())
            if m:
                chain = "" if h == f else f" (through {h})"
                errors.append(f"{f}: public header reaches <{m.group(1)}...>{chain}")
            stack += [i for i in includes.get(h, INCLUDE.findall(open(h, encoding="utf-8").read()))]
            if not is_public(h) and h != f:
                errors.append(f"{f}: public header includes {h}, which is not installed")
    if "--graph" in sys.argv:
        for a, b in sorted(e for e in edges if e[0] != e[1]):
            print(f"{a} -> {b}")
    for e in errors:
        print(e)
    print(f"check_layers: {len(files)} files, {len(LAYERS)} components, "
          f"{len([e for e in edges if e[0] != e[1]])} edges, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
