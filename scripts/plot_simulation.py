#!/usr/bin/env python3
"""Plots what `janus simulate --out DIR` wrote.

  scripts/plot_simulation.py DIR [-o FILE.png]

With study.csv and candidates.csv (--study): per-GPU throughput of each system at each
batch and TPOT SLO, and Janus's search space (GPUs against TPOT, every shape evaluated,
the chosen ones marked). With decisions.csv and devices.csv (serving): the demand the
Scaler measured and the GPUs it held over time.

Needs matplotlib (pip install matplotlib); the runtime itself does not.
"""
import argparse
import csv
import os
import sys


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_study(d, out, plt):
    rows = read(os.path.join(d, "study.csv"))
    cands = read(os.path.join(d, "candidates.csv"))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    points = list(dict.fromkeys((int(r["batch"]), float(r["slo_ms"])) for r in rows))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 5.5))
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        xs, ys, labels = [], [], []
        for j, (b, slo) in enumerate(points):
            r = next(r for r in rows if r["system"] == s and int(r["batch"]) == b and float(r["slo_ms"]) == slo)
            x = j + (i - (len(systems) - 1) / 2) * width
            if r["feasible"] == "1":
                xs.append(x)
                ys.append(float(r["tokens_per_s_per_device"]))
                labels.append(r["config"].replace(" GPUs", ""))
            else:
                ax.text(x, 5, "x", ha="center", color="red", fontsize=9)
        bars = ax.bar(xs, ys, width, label=s)
        for rect, lab in zip(bars, labels):
            ax.text(rect.get_x() + rect.get_width() / 2, rect.get_height(), lab, ha="center", va="bottom", fontsize=6,
                    rotation=90)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels([f"B={b}\nSLO {slo:.0f} ms" for b, slo in points], fontsize=8)
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title("best deployment within the SLO (x: none)")
    ax.legend(fontsize=8)

    batches = sorted({int(c["batch"]) for c in cands})
    for b in batches:
        js = [c for c in cands if c["system"] == "janus" and int(c["batch"]) == b and not c["infeasible"]]
        bx.scatter([int(c["devices"]) for c in js], [float(c["tpot_ms"]) for c in js], s=6, alpha=0.5, label=f"janus B={b}")
        chosen = [r for r in rows if r["system"] == "janus" and int(r["batch"]) == b and r["feasible"] == "1"]
        bx.scatter([int(r["devices"]) for r in chosen], [float(r["tpot_ms"]) for r in chosen], marker="*", s=120,
                   edgecolors="black")
    for slo in sorted({float(r["slo_ms"]) for r in rows}):
        bx.axhline(slo, color="gray", lw=0.6, ls="--")
        bx.text(bx.get_xlim()[1] if bx.get_xlim()[1] > 1 else 64, slo, f" {slo:.0f} ms", va="center", fontsize=7)
    bx.set_xlabel("GPUs (n_a + n_e)")
    bx.set_ylabel("TPOT ms")
    bx.set_title("Janus's search space (stars: chosen)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=130)


def plot_serving(d, out, plt):
    dec = read(os.path.join(d, "decisions.csv"))
    dev = read(os.path.join(d, "devices.csv"))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot([float(r["t_s"]) for r in dec], [float(r["lambda"]) for r in dec], color="tab:blue", label="demand")
    ax.set_xlabel("virtual time s")
    ax.set_ylabel("demand, output tokens/s", color="tab:blue")
    bx = ax.twinx()
    ts, ns = [], []
    for r in dev:
        if ns:
            ts.append(float(r["t_s"]))
            ns.append(ns[-1])
        ts.append(float(r["t_s"]))
        ns.append(int(r["devices"]))
    if dec:
        ts.append(float(dec[-1]["t_s"]))
        ns.append(ns[-1])
    bx.plot(ts, ns, color="tab:red", label="GPUs held")
    bx.set_ylabel("GPUs held", color="tab:red")
    ax.set_title("Scaler decisions (Algorithm 2) in virtual time")
    fig.tight_layout()
    fig.savefig(out, dpi=130)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir")
    p.add_argument("-o", "--out")
    a = p.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_simulation.py needs matplotlib: pip install matplotlib")
    if os.path.exists(os.path.join(a.dir, "study.csv")):
        out = a.out or os.path.join(a.dir, "study.png")
        plot_study(a.dir, out, plt)
    elif os.path.exists(os.path.join(a.dir, "decisions.csv")):
        out = a.out or os.path.join(a.dir, "serving.png")
        plot_serving(a.dir, out, plt)
    else:
        sys.exit(f"{a.dir}: no study.csv or decisions.csv (run janus simulate --out {a.dir})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
