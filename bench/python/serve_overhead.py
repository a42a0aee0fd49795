"""Overhead of driving a Deployment from Python: tokens/s of the same generated workload
served by `janus bench-serve` (C++, runtime/serving/load_driver.cc) and by this script
through janus.Deployment (the same arrivals: Deployment.plan() is bench-serve's seeded
draw), alternating runs in one process tree on one machine. Also the cost per layer batch
of a Python scheduling policy on the serving path beside AEBS in C++ on the same routings.

    PYTHONPATH=build/python python3 bench/python/serve_overhead.py --janus build/janus [--runs 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

import janus

CONFIG = """
model{preset = "tiny-qwen3-moe"}
attention{shards = 2, max_batch = 64}
experts{instances = 4, slots = 12}
scheduler{policy = "%s"}
workload{arrivals = "poisson", rate = %g, requests = %d, prompt_len = 16, output_len = %d}
"""


def python_serve(cfg, stream):
    """bench-serve's driver in Python: submit at the planned times, wait for every result."""
    with janus.Deployment(cfg) as dep:
        plan = dep.plan()
        start = time.perf_counter()
        reqs = []
        for p in plan:
            delay = p["at_s"] - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
            reqs.append(dep.submit(p["ids"], p["max_new_tokens"], stop_at_eos=False))
        if stream:
            tokens = sum(sum(1 for _ in r) for r in reqs)
        else:
            tokens = sum(len(r.result()) for r in reqs)
        return tokens / (time.perf_counter() - start)


def cli_serve(janus_bin, cfg_path):
    out = subprocess.run([janus_bin, "bench-serve", cfg_path, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def policy_costs(cfg_text):
    """us per layer batch: a Python policy on the serving path (GIL taken on the Scheduler's
    thread, NumPy in, NumPy out, the answer checked), and AEBS in C++ on the same routings."""
    routings = []

    @janus.policy("bench_py_primary")
    def py_primary(routing, layout):
        routings.append((routing.copy(), layout.placement, layout.num_experts, layout.slots))
        return layout.primary[routing]

    with janus.Deployment(cfg_text % ("bench_py_primary", 400, 64, 32)) as dep:
        plan = dep.plan()
        for r in [dep.submit(p["ids"], p["max_new_tokens"], stop_at_eos=False) for p in plan]:
            r.result()
    py = janus.policy_cost("bench_py_primary")
    janus.unregister_policy("bench_py_primary")
    # AEBS through janus.assign: the C++ policy plus one pybind call; the empty-call cost
    # (primary, which does almost nothing) is shown beside it.
    def per_call(name):
        t = time.perf_counter()
        for routing, placement, e, slots in routings:
            janus.assign(name, routing, placement, e, slots)
        return (time.perf_counter() - t) / len(routings) * 1e6
    rows = np.mean([r[0].shape[0] for r in routings])
    return py["us_per_batch"], per_call("aebs"), per_call("primary"), len(routings), rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--janus", default="build/janus")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--rate", type=float, default=400)
    ap.add_argument("--output-len", type=int, default=48)
    args = ap.parse_args()
    cfg = CONFIG % ("aebs", args.rate, args.requests, args.output_len)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.lua")
        with open(path, "w") as f:
            f.write(cfg)
        python_serve(cfg, False)  # makes the preset model on first use, warms the page cache
        cli, whole, stream = [], [], []
        for _ in range(args.runs):
            cli.append(cli_serve(args.janus, path))
            whole.append(python_serve(cfg, False))
            stream.append(python_serve(cfg, True))
    med = statistics.median
    print(f"workload: {args.requests} requests, Poisson {args.rate:g}/s, 16 in / {args.output_len} out, tiny-qwen3-moe, "
          f"2 shards x 4 instances, CPU; median of {args.runs} alternating runs")
    print(f"{'driver':<34}{'tokens/s':>10}{'runs':>28}{'vs bench-serve':>16}")
    for name, v in [("janus bench-serve (C++)", cli), ("Python: submit + result()", whole),
                    ("Python: submit + iterate tokens", stream)]:
        print(f"{name:<34}{med(v):>10.0f}{' '.join(f'{x:.0f}' for x in v):>28}{med(v) / med(cli):>15.3f}x")
    py_us, aebs_us, primary_us, n, rows = policy_costs(CONFIG)
    print(f"\npolicy cost per layer batch ({n} batches, {rows:.1f} rows on average):")
    print(f"  Python policy on the serving path (layout.primary[routing]): {py_us:8.1f} us")
    print(f"  AEBS (C++) via janus.assign:                                {aebs_us:8.1f} us")
    print(f"  primary (C++) via janus.assign (the call's own cost):       {primary_us:8.1f} us")


if __name__ == "__main__":
    main()
