#!/usr/bin/env python3
"""Peer for bench_decode: Hugging Face transformers generate() on the same checkpoint on the
GPU, in bf16, greedy, same batches, prompts and number of new tokens as bench_decode.

--mode compiled (the default: what a user who wants speed from PyTorch runs): experts as
grouped_mm, a static KV cache and the decode step under torch.compile (generate compiles
it itself when the cache is static). --mode eager: the defaults of from_pretrained and
generate (a dynamic cache, eager experts).

Prints one JSON line per batch on stdout:
  {"batch": B, "tokens_per_s": ..., "tpot_ms": ..., "prefill_s": ...}
tokens_per_s counts decode only: the time of a 1-token generate (the prefill) is
subtracted from the time of the full generate, as bench/peers/hf_decode.py does on the CPU.
"""
import argparse
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batches", default="1,16,64")
ap.add_argument("--prompt-len", type=int, default=16)
ap.add_argument("--new-tokens", type=int, default=64)
ap.add_argument("--mode", choices=["compiled", "eager"], default="compiled")
args = ap.parse_args()
compiled = args.mode == "compiled"
if compiled:
    # One graph per (batch, cache length): more than dynamo's default of 8 here, and past
    # the limit it would fall back to eager without saying so.
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = 64


def load(path):
    extra = {"experts_implementation": "grouped_mm"} if compiled else {}
    try:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cuda", **extra)
    except (TypeError, ValueError, ImportError) as e:  # transformers 4 spelling, or no accelerate
        if compiled:
            raise SystemExit(f"--mode compiled needs transformers 5 (experts_implementation): {e}")
        m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16).to("cuda")
    return m.eval()


t0 = time.perf_counter()
model = load(args.model)
print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}, mode {args.mode}; "
      f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
V = model.config.vocab_size
N = args.new_tokens


def prompts(b, length):
    # bench_decode's prompts: row i, position t.
    return [[1 + (i * 131 + t * 17 + 7) % (V - 1) for t in range(length)] for i in range(b)]


def run(ids, n):
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        extra = {"cache_implementation": "static"} if compiled else {}
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0, **extra)
    torch.cuda.synchronize()
    assert out.shape[1] == ids.shape[1] + n, out.shape
    return time.perf_counter() - t


for b in [int(x) for x in args.batches.split(",")]:
    ids = torch.tensor(prompts(b, args.prompt_len), device="cuda")
    run(ids, 4)  # warm-up
    if compiled:  # compile the graphs of both timed lengths before timing
        tw = time.perf_counter()
        run(ids, 1)
        run(ids, N)
        print(f"batch {b}: compiled and warmed in {time.perf_counter() - tw:.0f} s", file=sys.stderr, flush=True)
    t1 = min(run(ids, 1) for _ in range(2))
    reps = 2 if compiled or b > 1 else 1  # eager batch 1 is slow: one run of N tokens
    tn = min(run(ids, N) for _ in range(reps))
    dec = max(tn - t1, 1e-9)
    print(json.dumps({"batch": b, "mode": args.mode, "tokens_per_s": b * (N - 1) / dec, "tpot_ms": dec / (N - 1) * 1e3,
                      "prefill_s": t1}),
          flush=True)
    print(f"batch {b}: {b * (N - 1) / dec:.1f} tokens/s", file=sys.stderr, flush=True)
