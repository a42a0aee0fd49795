#!/usr/bin/env python3
"""janus serve under load against `janus bench-serve` in-process, same config, same run.

For each concurrency C (default 1 16 64 256) one wave of C requests (prompt of
--prompt-len ids, --output-len new tokens, ignore_eos) is sent at once:
  - over HTTP: C streamed /v1/completions from C threads (the openai client's HTTP
    library), tokens/s over the wave, TTFT per request measured at the client;
  - in-process: `janus bench-serve CONFIG --requests C --rate 1e9` (all arrive at once)
    on a config with the same model and graph.
Then --hold N (default 512) streaming connections held open at once, counting errors.

  build/pyenv/bin/python bench/serve/serve_bench.py --janus build/janus --model DIR

Prints a table; the numbers are for the machine it ran on (2 CPU cores here: client,
server and engine share them, so over HTTP the client's own cost is in the numbers).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

try:
    import httpx2 as httpx
except ImportError:
    import httpx


def start_server(janus, model, config, threads):
    p = subprocess.Popen([janus, "serve", "--model", model, "--config", config, "--port", "0", "--threads", str(threads),
                          "--http-threads", "1100"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = [None]
    ready = threading.Event()

    def read():
        for line in p.stderr:
            if "listening on http://" in line and port[0] is None:
                port[0] = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(120)
    if port[0] is None:
        p.kill()
        sys.exit("janus serve did not start")
    return p, port[0]


def wave(base, c, prompt_len, output_len, vocab):
    results = [None] * c
    start = threading.Barrier(c + 1)
    # One client for the wave: a client per request costs the client tens of ms (TLS
    # context, pool), which is the client's cost, not the server's.
    client = httpx.Client(base_url=base, timeout=600, limits=httpx.Limits(max_connections=c + 4, max_keepalive_connections=c + 4))

    def one(i):
        prompt = [(7 + 31 * i + 13 * j) % (vocab - 10) + 5 for j in range(prompt_len)]
        body = {"prompt": prompt, "max_tokens": output_len, "temperature": 0, "ignore_eos": True, "stream": True}
        start.wait()
        t0 = time.perf_counter()
        ttft, n, err = None, 0, None
        try:
            with client.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    err = f"HTTP {r.status_code}"
                else:
                    for line in r.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        n += 1
        except Exception as e:  # counted as an error
            err = repr(e)
        results[i] = (ttft, n, time.perf_counter() - t0, err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(c)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    client.close()
    errors = [r[3] for r in results if r[3]]
    ttfts = sorted(r[0] for r in results if r[0] is not None)
    # one data chunk per token but the final (finish_reason) chunk
    tokens = sum(max(0, r[1] - 1) for r in results)
    return {"tokens_per_s": tokens / wall, "ttft_p50_ms": 1e3 * statistics.median(ttfts) if ttfts else float("nan"),
            "errors": errors, "tokens": tokens}


def in_process(janus, config, c, prompt_len, output_len):
    out = subprocess.run([janus, "bench-serve", config, "--requests", str(c), "--rate", "1e9", "--prompt-len", str(prompt_len),
                          "--output-len", str(output_len), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    j = json.loads(out.stdout[out.stdout.index("{"):])
    return j


def find(j, *keys):
    """The first of `keys` found anywhere in the JSON object (bench-serve's report)."""
    if isinstance(j, dict):
        for k in keys:
            if k in j:
                return j[k]
        for v in j.values():
            r = find(v, *keys)
            if r is not None:
                return r
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--janus", required=True)
    ap.add_argument("--model", required=True, help="a model folder with its tokenizer (janus make-model --tokenizer)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--hold", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="runtime worker threads, both ways")
    a = ap.parse_args()
    with open(os.path.join(a.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    top = max(a.concurrency + [a.hold])
    config = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    config.write(f'model{{path = "{os.path.abspath(a.model)}"}}\n'
                 f'attention{{shards = 2, devices = "cpu", max_batch = {max(16, (top + 1) // 2)}}}\n'
                 'experts{instances = 2, devices = "cpu"}\n')
    config.close()
    server, port = start_server(a.janus, a.model, config.name, a.threads)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wave(base, 4, a.prompt_len, 4, vocab)  # warm up
        for c in a.concurrency:
            h = wave(base, c, a.prompt_len, a.output_len, vocab)
            rows.append((c, h))
        hold = wave(base, a.hold, a.prompt_len, 8, vocab)
    finally:
        server.terminate()
        server.wait(60)
    print(f"{'C':>5} {'HTTP tok/s':>11} {'in-proc tok/s':>14} {'ratio':>6} {'HTTP TTFT p50 ms':>17} "
          f"{'in-proc TTFT p50 ms':>20} {'errors':>6}")
    for c, h in rows:
        ip = in_process(a.janus, config.name, c, a.prompt_len, a.output_len)
        ip_tps = find(ip, "tokens_per_s", "tok_per_s", "throughput_tokens_per_s")
        t = find(ip, "ttft_ms")
        ip_ttft = t["p50"] if isinstance(t, dict) and "p50" in t else None
        ratio = h["tokens_per_s"] / ip_tps if ip_tps else float("nan")
        print(f"{c:>5} {h['tokens_per_s']:>11.0f} {ip_tps if ip_tps is not None else float('nan'):>14.0f} {ratio:>6.2f} "
              f"{h['ttft_p50_ms']:>17.1f} {ip_ttft if ip_ttft is not None else float('nan'):>20.1f} {len(h['errors']):>6}")
        if "error" in ip:
            print("   in-process:", ip["error"])
    print(f"held {a.hold} concurrent streaming connections: {a.hold - len(hold['errors'])} completed, "
          f"{len(hold['errors'])} errors{(' (first: ' + hold['errors'][0] + ')') if hold['errors'] else ''}")
    os.unlink(config.name)


if __name__ == "__main__":
    main()
