"""Compare expert-scheduling policies on one workload, notebook style: AEBS (Janus's
Algorithm 1), random_replica (EPLB-like), and a policy written here in Python, by a_max per
MoE layer (the most distinct experts any instance runs in a layer batch, what a
memory-bound MoE layer costs).

    PYTHONPATH=build/python python3 examples/python/compare_policies.py [--plot amax.png]

One deployment serves the workload with AEBS active; with compare_policies=True its
Scheduler also runs every other registered policy on the same layer batches, so all
policies are compared on identical routing. Then each policy serves the workload itself, to
show the tokens do not depend on the policy.
"""
import argparse
import os
import sys

import numpy as np

import janus

CONFIG = """
model{preset = "tiny-qwen3-moe"}
attention{shards = 2, max_batch = 64}
experts{instances = 4, slots = 12}
scheduler{policy = "%s"}
"""


@janus.policy("py_fewest_distinct")
def fewest_distinct(routing, layout):
    """Greedy in Python: experts by descending demand, each to the replica whose instance
    runs the fewest distinct experts so far (ties: fewer tokens, then lower id)."""
    experts, counts = np.unique(routing, return_counts=True)
    distinct = np.zeros(layout.num_instances, dtype=np.int64)
    tokens = np.zeros(layout.num_instances, dtype=np.int64)
    choice = layout.primary.copy()
    for e, c in sorted(zip(experts.tolist(), counts.tolist()), key=lambda x: -x[1]):
        reps = layout.replicas_of(e)
        best = min(reps, key=lambda r: (distinct[layout.replica_instance[r]], tokens[layout.replica_instance[r]], r))
        choice[e] = best
        distinct[layout.replica_instance[best]] += 1
        tokens[layout.replica_instance[best]] += c
    return choice[routing]


def workload(dep, n):
    rng = np.random.default_rng(7)
    return [rng.integers(0, dep.vocab_size, size=int(rng.integers(4, 24))).tolist() for _ in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--plot", help="write a_max per layer to this PNG (needs matplotlib)")
    args = ap.parse_args()

    with janus.Deployment(CONFIG % "aebs", compare_policies=True) as dep:
        prompts = workload(dep, args.requests)
        reqs = [dep.submit(p, args.tokens, stop_at_eos=False) for p in prompts]
        reference = [r.result() for r in reqs]
        table = {p.policy: p for p in dep.amax()}

    names = ["aebs", "py_fewest_distinct", "token_balanced", "random_replica", "primary"]
    layers = [l.layer for l in table["aebs"].layers]
    print(f"a_max per MoE layer on the same {table['aebs'].layers[0].batches} layer batches per layer "
          f"({args.requests} requests x {args.tokens} tokens, 4 instances x 12 slots):")
    print(f"{'policy':<20}" + "".join(f"{'layer ' + str(l):>10}" for l in layers) + f"{'mean':>10}")
    for n in names:
        p = table[n]
        print(f"{n:<20}" + "".join(f"{l.mean:>10.2f}" for l in p.layers) + f"{p.mean:>10.2f}")
    cost = janus.policy_cost("py_fewest_distinct")
    print(f"py_fewest_distinct: {cost['calls']} layer batches, {cost['us_per_batch']:.0f} us per batch in Python")

    # The tokens do not depend on the policy (partial sums are added in a fixed order).
    for n in ["random_replica", "py_fewest_distinct"]:
        with janus.Deployment(CONFIG % n) as dep:
            same = [dep.submit(p, args.tokens, stop_at_eos=False) for p in prompts]
            assert [r.result() for r in same] == reference, n
    print("tokens identical under aebs, random_replica and py_fewest_distinct")

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            ax.bar(np.arange(len(layers)) + i * width, [l.mean for l in table[n].layers], width, label=n)
        ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, [f"layer {l}" for l in layers])
        ax.set_ylabel("mean a_max")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
