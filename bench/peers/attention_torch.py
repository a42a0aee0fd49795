#!/usr/bin/env python3
"""Peer for bench_attention: decode attention in PyTorch on the same shapes, one query
token per sequence over a contiguous bf16 KV cache, torch.nn.functional.
scaled_dot_product_attention with grouped-query heads (enable_gqa; if this torch lacks
it, k and v repeated to every query head, as Hugging Face's repeat_kv does), and
flash_attn_with_kvcache over a paged cache when flash-attn is importable.

Reads --cases "B:ctx,B:ctx,..."; prints one JSON object {"device", "cases": [{"batch",
"context", "sdpa_us", "sdpa_variant", "flash_us"}], "error"}. Times are medians of CUDA
event timings, cycling through enough copies of the cache to defeat the 50 MB L2."""
import argparse
import json
import math


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"torch not importable: {e}"}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return
    try:
        from flash_attn import flash_attn_with_kvcache  # noqa: F401
        have_flash = True
    except Exception:  # noqa: BLE001
        have_flash = False
    dev = torch.device("cuda")
    Hq, Hk, D = args.heads, args.kv_heads, args.head_dim

    def time_us(fn, inputs):
        for inp in inputs[:2]:
            fn(*inp)
        torch.cuda.synchronize()
        ts = []
        for i in range(args.iters):
            inp = inputs[i % len(inputs)]
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(*inp)
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) * 1000.0)
        ts.sort()
        return ts[len(ts) // 2]

    variant = {"v": "enable_gqa"}

    def sdpa(q, k, v):
        if variant["v"] == "enable_gqa":
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k.repeat_interleave(Hq // Hk, 1), v.repeat_interleave(Hq // Hk, 1))

    out_cases = []
    error = None
    for spec in args.cases.split(","):
        B, ctx = (int(x) for x in spec.split(":"))
        kv_bytes = B * ctx * Hk * D * 2 * 2
        copies = max(1, min(16, math.ceil(160e6 / kv_bytes)))
        row = {"batch": B, "context": ctx}
        try:
            inputs = []
            for _ in range(copies):
                q = torch.randn(B, Hq, 1, D, device=dev, dtype=torch.bfloat16)
                k = torch.randn(B, Hk, ctx, D, device=dev, dtype=torch.bfloat16)
                v = torch.randn(B, Hk, ctx, D, device=dev, dtype=torch.bfloat16)
                inputs.append((q, k, v))
            try:
                row["sdpa_us"] = time_us(sdpa, inputs)
            except Exception:  # noqa: BLE001
                variant["v"] = "repeat_kv"
                row["sdpa_us"] = time_us(sdpa, inputs)
            row["sdpa_variant"] = variant["v"]
            del inputs
            if have_flash:
                from flash_attn import flash_attn_with_kvcache
                bs = 256  # flash-attn's paged cache wants blocks of a multiple of 256
                nb = (ctx + bs - 1) // bs
                finputs = []
                for _ in range(copies):
                    kc = torch.randn(B * nb, bs, Hk, D, device=dev, dtype=torch.bfloat16)
                    vc = torch.randn(B * nb, bs, Hk, D, device=dev, dtype=torch.bfloat16)
                    table = torch.randperm(B * nb, device=dev, dtype=torch.int32).reshape(B, nb)
                    seqlens = torch.full((B,), ctx, device=dev, dtype=torch.int32)
                    q = torch.randn(B, 1, Hq, D, device=dev, dtype=torch.bfloat16)
                    finputs.append((q, kc, vc, seqlens, table))
                row["flash_us"] = time_us(
                    lambda q, kc, vc, sl, bt: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=sl, block_table=bt),
                    finputs)
                del finputs
        except Exception as e:  # noqa: BLE001
            error = f"{type(e).__name__}: {e}"
        torch.cuda.empty_cache()
        out_cases.append(row)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "flash_attn": have_flash,
           "cases": out_cases}
    if error:
        out["error"] = error
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
