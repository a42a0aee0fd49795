#!/usr/bin/env python3
"""Peer for bench_cpu_decode: Hugging Face transformers generate() on the same checkpoint,
same batch and number of new tokens, greedy, CPU. Prints {"tokens_per_s": ...} (decode only:
the time of a 1-token generate is subtracted)."""
import argparse, json, time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--steps", type=int, default=64)
args = ap.parse_args()
torch.set_num_threads(max(1, torch.get_num_threads()))
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
ids = torch.tensor([[3 + b, 17, 40 + 7 * b, 99] for b in range(args.batch)])
kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)

def run(n):
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
    return time.perf_counter() - t0

run(2)  # warm up
t1 = min(run(1) for _ in range(2))
tn = min(run(args.steps) for _ in range(2))
print(json.dumps({"tokens_per_s": args.batch * (args.steps - 1) / max(tn - t1, 1e-9)}))
