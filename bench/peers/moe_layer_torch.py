#!/usr/bin/env python3
"""Peers for bench_moe_layer: one expert instance of a Qwen3-30B-A3B-like MoE layer in
PyTorch, on the same shapes and the same routing (read from --routing, written by the
bench), bf16 weights, random values.

  grouped_mm  tokens sorted by expert, gate and up fused into one torch._grouped_mm,
              silu(g) * u, a second torch._grouped_mm for down, weighted index_add_ back
              to the rows (routing prep included, as a user would run it);
              grouped_mm_only times just the two products and the activation on
              pre-sorted rows.
  loop        the Hugging Face per-expert loop (Qwen3MoeSparseMoeBlock in transformers 4):
              for each activated expert, gather its rows, three F.linear, index_add_.

Prints one JSON object: {"device": ..., "cases": [{"batch", "grouped_mm_us",
"grouped_mm_only_us", "loop_us", "grouped_mm_variant"}], "error": ...}. Times are
medians of CUDA-event timings, cycling through the given routings."""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routing", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--loop-iters", type=int, default=5)
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
    spec = json.load(open(args.routing))
    H, I, E, K = spec["hidden"], spec["inter"], spec["experts"], spec["top_k"]
    dev = torch.device("cuda")
    torch.manual_seed(0)
    s = 1.0 / H**0.5
    w_gate_up = (torch.randn(E, 2 * I, H, device=dev, dtype=torch.bfloat16) * s).contiguous()  # [E, 2I, H]
    w_down = (torch.randn(E, H, I, device=dev, dtype=torch.bfloat16) * (1.0 / I**0.5)).contiguous()  # [E, H, I]
    w_gate, w_up = w_gate_up[:, :I, :], w_gate_up[:, I:, :]

    def time_us(fn, inputs, iters):
        for inp in inputs[:2]:
            fn(*inp)
        torch.cuda.synchronize()
        ts = []
        for i in range(iters):
            inp = inputs[i % len(inputs)]
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(*inp)
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) * 1000.0)
        ts.sort()
        return ts[len(ts) // 2]

    variant = {"v": "plain"}

    def grouped(a, b, offs):
        if variant["v"] == "plain":
            return torch._grouped_mm(a, b, offs=offs)
        return torch._grouped_mm(a, b, offs=offs, out_dtype=torch.bfloat16)

    def sort_rows(x, ids):
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        rows = order // K
        counts = torch.bincount(flat, minlength=E)
        offs = torch.cumsum(counts, 0).to(torch.int32)
        return rows, order, offs

    def experts_sorted(xs, offs):
        gu = grouped(xs, w_gate_up.transpose(-2, -1), offs)  # [M, 2I]
        g, u = gu[:, :I], gu[:, I:]
        return grouped((F.silu(g) * u).contiguous(), w_down.transpose(-2, -1), offs)  # [M, H]

    def grouped_layer(x, ids, w):
        rows, order, offs = sort_rows(x, ids)
        y = experts_sorted(x[rows], offs)
        out = torch.zeros_like(x, dtype=torch.float32)
        out.index_add_(0, rows, y.float() * w.reshape(-1)[order, None])
        return out

    def loop_layer(x, ids, w):
        out = torch.zeros_like(x, dtype=torch.float32)
        mask = F.one_hot(ids.long(), num_classes=E).permute(2, 1, 0)  # [E, K, B]
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit:
            e = int(e)
            k_idx, rows = torch.where(mask[e])
            xs = x[rows]
            h = F.silu(F.linear(xs, w_gate[e])) * F.linear(xs, w_up[e])
            y = F.linear(h, w_down[e]) * w[rows, k_idx, None]
            out.index_add_(0, rows, y.float())
        return out

    cases = []
    error = None
    for case in spec["cases"]:
        B = case["batch"]
        inputs, sorted_inputs = [], []
        for ids_list, w_list in zip(case["ids"], case["weights"]):
            ids = torch.tensor(ids_list, dtype=torch.int64, device=dev).reshape(B, K)
            w = torch.tensor(w_list, dtype=torch.float32, device=dev).reshape(B, K)
            x = torch.randn(B, H, device=dev, dtype=torch.bfloat16)
            inputs.append((x, ids, w))
            rows, _, offs = sort_rows(x, ids)
            sorted_inputs.append((x[rows].contiguous(), offs))
        row = {"batch": B}
        try:
            try:
                row["grouped_mm_us"] = time_us(grouped_layer, inputs, args.iters)
            except Exception:  # noqa: BLE001 - some builds want an explicit out_dtype
                variant["v"] = "out_dtype"
                row["grouped_mm_us"] = time_us(grouped_layer, inputs, args.iters)
            row["grouped_mm_only_us"] = time_us(experts_sorted, sorted_inputs, args.iters)
            row["grouped_mm_variant"] = variant["v"]
        except Exception as e:  # noqa: BLE001
            error = f"torch._grouped_mm failed: {type(e).__name__}: {e}"
        try:
            row["loop_us"] = time_us(loop_layer, inputs, args.loop_iters)
        except Exception as e:  # noqa: BLE001
            error = f"loop failed: {type(e).__name__}: {e}"
        cases.append(row)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": cases}
    if error:
        out["error"] = error
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(0)
