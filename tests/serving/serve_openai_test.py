#!/usr/bin/env python3
"""janus serve against the real `openai` client (issue 19's CI test).

A tiny Mixtral-shaped model with Mixtral's real vocabulary (`janus make-model --tokenizer`,
tests/fixtures/tokenizers/mixtral) is served on a free port; the checks:

  - completions and chat, whole and streamed, agree; greedy text equals the reference
    engine's ids (`janus generate`) decoded by Hugging Face `tokenizers`;
  - usage and finish_reason (length, stop strings);
  - /tokenize equals HF tokenizers' ids on the fixture's hard strings; /detokenize;
  - /metrics parses with prometheus_client's parser and counts what was generated;
  - a client that disconnects mid-stream cancels its request (running back to 0), and one
    that disconnects while its request waits for a slot takes it out of the queue at once
    (a second server with one slot), the running request going on token for token;
  - logprobs: completions' legacy shape and chat's content list, whole and streamed, parsed
    by the client, top lists sorted and of the asked length;
  - every bad request gets its vLLM-style JSON error and the server keeps serving;
  - 16 concurrent streams each equal their sequential answer.

Run by ctest (tests/CMakeLists.txt) with the system python; it re-runs itself in the venv
that `scripts/bootstrap.sh test` makes (build/pyenv: pinned openai, prometheus_client,
tokenizers).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import socket
import threading
import time

CHAT_TEMPLATE = "chat_templates/templates/mixtral-8x7b-instruct.jinja"
CONFIG = """model{preset = "tiny-mixtral"}
attention{shards = 2, devices = "cpu", max_batch = 16}
experts{instances = 2, devices = "cpu"}
"""
ONE_SLOT_CONFIG = """model{preset = "tiny-mixtral"}
attention{shards = 1, devices = "cpu", max_batch = 1}
experts{instances = 1, devices = "cpu"}
"""
API_KEY = "test-key"
NAME = "tiny"


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--janus", required=True)
    p.add_argument("--venv", required=True)
    p.add_argument("--fixtures", required=True)
    p.add_argument("--work", required=True)
    return p.parse_args()


def reexec_in_venv(args):
    py = os.path.join(args.venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(args.venv):
        return
    if not os.path.exists(py):
        print(f"FAIL: no Python venv at {args.venv}: run `scripts/bootstrap.sh test` (it makes build/pyenv with the "
              "pinned openai, prometheus_client and tokenizers), or make it by hand: python3 -m venv build/pyenv && "
              "build/pyenv/bin/pip install openai==3.63.0 prometheus_client==0.26.0 tokenizers==0.23.3", file=sys.stderr)
        sys.exit(1)
    os.execv(py, [py] + sys.argv)


class Server:
    def __init__(self, janus, model, config):
        self.proc = subprocess.Popen([janus, "serve", "--model", model, "--config", config, "--port", "0",
                                      "--served-model-name", NAME, "--api-key", API_KEY, "--threads", "2"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        self.log = []
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                if "listening on http://" in line and self.port is None:
                    self.port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1])
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or self.port is None:
            self.stop()
            raise SystemExit("FAIL: janus serve did not start:\n" + "".join(self.log))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


failures = []


def check(cond, what):
    if cond:
        print(f"ok   {what}")
    else:
        print(f"FAIL {what}")
        failures.append(what)
    return cond


def main():
    args = parse_args()
    reexec_in_venv(args)
    try:  # the HTTP client the pinned openai uses
        import httpx2 as httpx
    except ImportError:
        import httpx
    import openai
    from prometheus_client.parser import text_string_to_metric_families
    from tokenizers import Tokenizer as HfTokenizer

    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "model")
    tok_dir = os.path.join(args.fixtures, "tokenizers", "mixtral")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        subprocess.run([args.janus, "make-model", "--preset", "tiny-mixtral", "--out", model, "--tokenizer", tok_dir],
                       check=True, stderr=subprocess.DEVNULL)
    shutil.copy(os.path.join(args.fixtures, CHAT_TEMPLATE), os.path.join(model, "chat_template.jinja"))
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["vocab_size"] == 32000 and cfg["bos_token_id"] == 1 and cfg["eos_token_id"] in (2, [2]) and
          os.path.exists(os.path.join(model, "tokenizer.json")), "make-model --tokenizer: vocabulary, bos/eos and files")
    small = os.path.join(args.work, "small")
    r = subprocess.run([args.janus, "make-model", "--preset", "tiny-mixtral", "--out", small, "--vocab-size", "1000"],
                       capture_output=True, text=True)
    with open(os.path.join(small, "config.json")) as f:
        check(r.returncode == 0 and json.load(f)["vocab_size"] == 1000, "make-model --vocab-size 1000")
    r = subprocess.run([args.janus, "make-model", "--preset", "tiny-mixtral", "--out", small, "--vocab-size", "100",
                        "--tokenizer", tok_dir], capture_output=True, text=True)
    check(r.returncode == 2 and "smaller than the tokenizer's vocabulary (32000" in r.stderr,
          "make-model refuses a vocabulary smaller than the tokenizer's")
    r = subprocess.run([args.janus, "make-model", "--preset", "tiny-mixtral", "--out", small, "--vocab-size", "ten"],
                       capture_output=True, text=True)
    check(r.returncode == 2 and "vocab-size" in r.stderr, "make-model refuses a malformed --vocab-size")
    config = os.path.join(args.work, "serve.lua")
    with open(config, "w") as f:
        f.write(CONFIG)
    hf = HfTokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))

    def reference(ids, n):
        out = subprocess.run([args.janus, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
                              "--max-new-tokens", str(n), "--ignore-eos"], check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["tokens"]

    server = Server(args.janus, model, config)
    base = f"http://127.0.0.1:{server.port}"
    client = openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    try:
        check(http.get("/health").status_code == 200, "GET /health is 200")
        models = client.models.list()
        check([m.id for m in models.data] == [NAME], "GET /v1/models lists the served name")

        # -- completions: whole, streamed, against the reference engine -----------------
        prompt = "The quick brown fox jumps over"
        ids = hf.encode(prompt).ids
        ref = reference(ids, 12)
        whole = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0,
                                          extra_body={"ignore_eos": True})
        check(whole.choices[0].text == hf.decode(ref), "greedy completion text == reference ids decoded by HF tokenizers")
        check(whole.choices[0].finish_reason == "length", "finish_reason length")
        check(whole.usage.prompt_tokens == len(ids) and whole.usage.completion_tokens == 12 and
              whole.usage.total_tokens == len(ids) + 12, "usage counts prompt and completion tokens")
        by_ids = client.completions.create(model=NAME, prompt=ids, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
        check(by_ids.choices[0].text == whole.choices[0].text, "a prompt of ids gives the same completion")
        chunks = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, stream=True,
                                                stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        check(text == whole.choices[0].text, "streamed completion == whole completion")
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        check(reasons == ["length"], "the stream's last choice says length")
        check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12, "stream_options.include_usage: usage chunk")

        # stop strings: the text ends before the stop string, finish_reason stop
        full = whole.choices[0].text
        stop = full[len(full) // 2:len(full) // 2 + 3]
        if stop.strip():
            stopped = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, stop=[stop],
                                                extra_body={"ignore_eos": True})
            check(stopped.choices[0].text == full[:full.index(stop)] and stopped.choices[0].finish_reason == "stop",
                  f"stop string {stop!r} ends the text before it, finish_reason stop")
            sstream = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, stop=[stop],
                                                     stream=True, extra_body={"ignore_eos": True}))
            check("".join(c.choices[0].text for c in sstream if c.choices) == full[:full.index(stop)],
                  "a streamed stop string holds back its prefix and ends the same")

        # -- chat ----------------------------------------------------------------------
        messages = [{"role": "user", "content": "Write one line about foxes."}]
        tok = http.post("/tokenize", json={"messages": messages, "add_generation_prompt": True}).json()
        check(tok["tokens"][:1] == [1] and tok["count"] == len(tok["tokens"]), "/tokenize of messages: bos first, count")
        chat_ref = reference(tok["tokens"], 10)
        chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0,
                                              extra_body={"ignore_eos": True})
        check(chat.choices[0].message.content == hf.decode(chat_ref), "greedy chat text == reference ids decoded")
        check(chat.choices[0].message.role == "assistant" and chat.usage.prompt_tokens == tok["count"],
              "chat message role and prompt usage")
        cchunks = list(client.chat.completions.create(model=NAME, messages=messages, max_completion_tokens=10, temperature=0,
                                                      stream=True, extra_body={"ignore_eos": True}))
        ctext = "".join(c.choices[0].delta.content or "" for c in cchunks if c.choices)
        check(ctext == chat.choices[0].message.content, "streamed chat == whole chat (max_completion_tokens)")
        check(cchunks[0].choices[0].delta.role == "assistant", "the first chat chunk carries the role")

        # -- tokenize / detokenize against HF tokenizers' fixture ----------------------
        with open(os.path.join(tok_dir, "cases.json")) as f:
            cases = json.load(f)["cases"]
        bad = [c["text"] for c in cases
               if http.post("/tokenize", json={"prompt": c["text"]}).json().get("tokens") != c["ids"] or
               http.post("/tokenize", json={"prompt": c["text"], "add_special_tokens": False}).json().get("tokens") != c["ids_plain"]]
        check(not bad, f"/tokenize == HF tokenizers on all {len(cases)} fixture strings" + (f" (differs: {bad[:3]!r})" if bad else ""))
        bad = [c["text"] for c in cases if http.post("/detokenize", json={"tokens": c["ids"]}).json().get("prompt") != c["decode"]]
        check(not bad, f"/detokenize == HF decode on all {len(cases)} fixture id lists")

        # -- metrics -------------------------------------------------------------------
        fams = {f.name: f for f in text_string_to_metric_families(httpx.get(base + "/metrics").text)}
        for name, kind in [("janus:time_to_first_token_seconds", "histogram"), ("janus:inter_token_latency_seconds", "histogram"),
                           ("janus:e2e_request_latency_seconds", "histogram"), ("janus:prompt_tokens", "counter"),
                           ("janus:generation_tokens", "counter"), ("janus:num_requests_running", "gauge"),
                           ("janus:num_requests_waiting", "gauge"), ("janus:kv_cache_usage_perc", "gauge"),
                           ("janus:amax_mean", "gauge"), ("janus:membership_epoch", "gauge")]:
            check(name in fams and fams[name].type == kind, f"/metrics has {kind} {name}")

        def sample(name, suffix=""):
            fams = {f.name: f for f in text_string_to_metric_families(httpx.get(base + "/metrics").text)}
            return sum(s.value for s in fams[name].samples if s.name == name + suffix)

        generated = sample("janus:generation_tokens", "_total")
        check(generated >= 12 * 4 + 10 * 2, f"generation_tokens_total counts what was generated ({generated})")
        check(sample("janus:time_to_first_token_seconds", "_count") >= 6, "TTFT histogram counts the requests")

        # -- cancel on disconnect ------------------------------------------------------
        cancelled_before = sample("janus:requests_cancelled", "_total")
        with httpx.stream("POST", base + "/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"prompt": prompt, "max_tokens": 3000, "temperature": 0, "ignore_eos": True, "stream": True},
                          timeout=60) as r:
            # next() on a kept iterator: leaving a for loop would close the generator, and with
            # it (in httpx) the response, before the check below.
            lines = r.iter_lines()
            got = 0
            while got < 3:
                if next(lines).startswith("data: "):
                    got += 1
            running = sample("janus:num_requests_running")
            check(running == 1, f"a long stream is running ({running} running, {got} chunks read)")
        # the client is gone: the next chunk's write fails and the request is cancelled
        deadline = time.time() + 30
        while time.time() < deadline and sample("janus:num_requests_running") != 0:
            time.sleep(0.05)
        check(sample("janus:num_requests_running") == 0, "after the client disconnects, running requests are back to 0")
        check(sample("janus:requests_cancelled", "_total") == cancelled_before + 1 and
              sample("janus:client_disconnects", "_total") >= 1 and sample("janus:kv_cache_usage_perc") == 0,
              "it was cancelled as a disconnect and its KV freed")

        # a client that gives up on a whole (non-streamed) answer cancels it too: the server
        # sends a space (leading JSON whitespace) every 250 ms and notices the closed socket
        cancelled_before = sample("janus:requests_cancelled", "_total")
        body = json.dumps({"prompt": prompt, "max_tokens": 4000, "temperature": 0, "ignore_eos": True}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        deadline = time.time() + 30
        while time.time() < deadline and sample("janus:num_requests_running") != 1:
            time.sleep(0.02)
        sock.close()
        while time.time() < deadline and sample("janus:num_requests_running") != 0:
            time.sleep(0.05)
        check(sample("janus:num_requests_running") == 0 and sample("janus:requests_cancelled", "_total") == cancelled_before + 1,
              "a client that closes before its whole answer is written cancels its request")

        # -- logprobs --------------------------------------------------------------------
        lp = client.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=0, logprobs=3,
                                       extra_body={"ignore_eos": True})
        L = lp.choices[0].logprobs
        check(lp.choices[0].text == whole.choices[0].text[:len(lp.choices[0].text)], "a completion with logprobs: the same text")
        check(L is not None and len(L.tokens) == 8 and len(L.token_logprobs) == 8 and len(L.top_logprobs) == 8 and
              len(L.text_offset) == 8, "completions logprobs: tokens, token_logprobs, top_logprobs, text_offset, one per token")
        check(all(isinstance(x, float) and x <= 0 for x in L.token_logprobs), "token_logprobs are log-probabilities")
        check(all(3 <= len(t) <= 4 and L.tokens[i] in t and abs(max(t.values()) - L.token_logprobs[i]) < 1e-6
                  for i, t in enumerate(L.top_logprobs)),
              "top_logprobs: the 3 most likely and the chosen token; greedy chose the most likely")
        check(L.text_offset[0] == 0 and all(L.text_offset[i + 1] == L.text_offset[i] + len(L.tokens[i]) for i in range(7)),
              "text_offset: where each token's text starts")
        check("".join(L.tokens) == lp.choices[0].text, f"the tokens' pieces make the text ({''.join(L.tokens)!r})")
        lp0 = client.completions.create(model=NAME, prompt=prompt, max_tokens=4, temperature=0, logprobs=0,
                                        extra_body={"ignore_eos": True}).choices[0].logprobs
        check(all(len(t) == 1 for t in lp0.top_logprobs) and lp0.token_logprobs == L.token_logprobs[:4],
              "logprobs 0: the chosen token's own only, the same values")
        lps = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=0, logprobs=3, stream=True,
                                             extra_body={"ignore_eos": True}))
        st = [c.choices[0].logprobs for c in lps if c.choices and c.choices[0].logprobs]
        check(sum((x.tokens for x in st), []) == L.tokens and sum((x.token_logprobs for x in st), []) == L.token_logprobs and
              sum((x.text_offset for x in st), []) == L.text_offset, "streamed completions logprobs == whole")
        sampled = client.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=1.5, seed=3, logprobs=2,
                                            extra_body={"ignore_eos": True}).choices[0].logprobs
        check(sampled.token_logprobs[0] == L.token_logprobs[0] or sampled.tokens[0] != L.tokens[0],
              "a sampled request's logprobs are the raw distribution's (before temperature)")
        check(all(abs(sorted(t.values(), reverse=True)[0] - max(L.top_logprobs[0].values())) < 1e-6
                  for t in sampled.top_logprobs[:1]), "a sampled first token's top list is the greedy one's")

        cl = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0, logprobs=True,
                                            top_logprobs=4, extra_body={"ignore_eos": True})
        content = cl.choices[0].logprobs.content
        check(cl.choices[0].message.content == chat.choices[0].message.content and len(content) == 10,
              "chat logprobs: one entry per token, the same text")
        check(all(len(c.top_logprobs) == 4 and
                  all(c.top_logprobs[k].logprob >= c.top_logprobs[k + 1].logprob for k in range(3)) and
                  abs(c.top_logprobs[0].logprob - c.logprob) < 1e-6 for c in content),
              "chat top_logprobs: 4, sorted, greedy chose the first")
        check(all(c.bytes == list(c.token.encode()) and all(t.bytes == list(t.token.encode()) for t in c.top_logprobs)
                  for c in content), "chat logprobs: bytes are each token's UTF-8")
        ccl = list(client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0, logprobs=True,
                                                  top_logprobs=4, stream=True, extra_body={"ignore_eos": True}))
        scontent = sum((c.choices[0].logprobs.content for c in ccl if c.choices and c.choices[0].logprobs), [])
        check([(c.token, c.logprob, [t.token for t in c.top_logprobs]) for c in scontent] ==
              [(c.token, c.logprob, [t.token for t in c.top_logprobs]) for c in content], "streamed chat logprobs == whole")
        bare = client.chat.completions.create(model=NAME, messages=messages, max_tokens=3, temperature=0, logprobs=True,
                                              extra_body={"ignore_eos": True}).choices[0].logprobs.content
        check(len(bare) == 3 and all(c.top_logprobs == [] for c in bare), "chat logprobs without top_logprobs: no alternatives")
        check(chat.choices[0].logprobs is None, "no logprobs unless asked")

        # -- bad requests --------------------------------------------------------------
        def err(path, body=None, raw=None, headers=None):
            r = httpx.post(base + path, content=raw if raw is not None else json.dumps(body),
                           headers=headers if headers is not None else {"Authorization": f"Bearer {API_KEY}"}, timeout=30)
            try:
                e = r.json().get("error", {})
            except Exception:
                e = {}
            return r.status_code, e

        cases_bad = [
            ("bad JSON", "/v1/completions", None, b"{not json", 400),
            ("a body that is not an object", "/v1/completions", [1, 2], None, 400),
            ("max_tokens of the wrong type", "/v1/completions", {"prompt": "hi", "max_tokens": "ten"}, None, 400),
            ("negative max_tokens", "/v1/completions", {"prompt": "hi", "max_tokens": -5}, None, 400),
            ("absurd max_tokens", "/v1/completions", {"prompt": "hi", "max_tokens": 10 ** 9}, None, 400),
            ("temperature of the wrong type", "/v1/completions", {"prompt": "hi", "temperature": "hot"}, None, 400),
            ("token ids outside the vocabulary", "/v1/completions", {"prompt": [1, 32000], "max_tokens": 2}, None, 400),
            ("a prompt longer than the context", "/v1/completions", {"prompt": [5] * 5000, "max_tokens": 2}, None, 400),
            ("no prompt", "/v1/completions", {"max_tokens": 2}, None, 400),
            ("negative logprobs", "/v1/completions", {"prompt": "hi", "logprobs": -1}, None, 400),
            ("logprobs over 20", "/v1/completions", {"prompt": "hi", "logprobs": 21}, None, 400),
            ("logprobs not an integer", "/v1/completions", {"prompt": "hi", "logprobs": 1.5}, None, 400),
            ("logprobs a string", "/v1/completions", {"prompt": "hi", "logprobs": "2"}, None, 400),
            ("echo with logprobs", "/v1/completions", {"prompt": "hi", "logprobs": 2, "echo": True}, None, 400),
            ("chat logprobs not a boolean", "/v1/chat/completions", {"messages": messages, "logprobs": 3}, None, 400),
            ("chat negative top_logprobs", "/v1/chat/completions",
             {"messages": messages, "logprobs": True, "top_logprobs": -1}, None, 400),
            ("chat top_logprobs over 20", "/v1/chat/completions",
             {"messages": messages, "logprobs": True, "top_logprobs": 21}, None, 400),
            ("chat top_logprobs not an integer", "/v1/chat/completions",
             {"messages": messages, "logprobs": True, "top_logprobs": 2.5}, None, 400),
            ("chat top_logprobs without logprobs", "/v1/chat/completions", {"messages": messages, "top_logprobs": 2}, None, 400),
            ("chat without messages", "/v1/chat/completions", {"max_tokens": 2}, None, 400),
            ("chat messages of the wrong shape", "/v1/chat/completions", {"messages": [{"content": "x"}]}, None, 400),
            ("an unknown model", "/v1/completions", {"model": "gpt-9", "prompt": "hi"}, None, 404),
            ("an unknown model in chat", "/v1/chat/completions", {"model": "gpt-9", "messages": messages}, None, 404),
            ("/tokenize without prompt", "/tokenize", {}, None, 400),
            ("/detokenize of ids outside the vocabulary", "/detokenize", {"tokens": [-1]}, None, 400),
        ]
        for what, path, body, raw, code in cases_bad:
            status, e = err(path, body, raw)
            check(status == code and e.get("code") == code and isinstance(e.get("message"), str) and e.get("message") and
                  e.get("type"), f"{what}: {code} with a JSON error ({e.get('message', '')[:70]!r})")
        status, e = err("/v1/completions", {"prompt": "hi"}, headers={"Authorization": "Bearer wrong"})
        check(status == 401 and e.get("code") == 401, "a wrong API key: 401")
        status, e = err("/v1/completions", {"prompt": "hi"}, headers={})
        check(status == 401, "no API key: 401")
        status, _ = err("/v1/completions", raw=b"{\"prompt\": \"" + b"a" * (5 << 20) + b"\"}")
        check(status == 413, "a body over the limit: 413")
        try:
            client.completions.create(model="gpt-9", prompt="hi", max_tokens=2)
            check(False, "the openai client raises NotFoundError for an unknown model")
        except openai.NotFoundError:
            check(True, "the openai client raises NotFoundError for an unknown model")
        try:
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
            check(False, "the openai client raises AuthenticationError for a wrong key")
        except openai.AuthenticationError:
            check(True, "the openai client raises AuthenticationError for a wrong key")
        again = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
        check(again.choices[0].text == whole.choices[0].text, "after every refusal the server still serves the same text")

        # -- 16 concurrent streams, each equal to its sequential answer ------------------
        prompts = [f"Story {i}: once upon a time there was a {w}" for i, w in
                   enumerate(["fox", "cat", "dog", "owl", "ant", "bee", "cow", "elk", "yak", "emu", "hen", "pig", "rat",
                              "bat", "eel", "cod"])]
        sequential = [client.completions.create(model=NAME, prompt=p, max_tokens=16, temperature=0,
                                                extra_body={"ignore_eos": True}).choices[0].text for p in prompts]
        results = [None] * len(prompts)

        def one(i):
            try:
                s = client.completions.create(model=NAME, prompt=prompts[i], max_tokens=16, temperature=0, stream=True,
                                              extra_body={"ignore_eos": True})
                results[i] = "".join(c.choices[0].text for c in s if c.choices)
            except Exception as e:  # reported as a mismatch below
                results[i] = f"<error {e!r}>"

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        same = [i for i in range(len(prompts)) if results[i] == sequential[i]]
        check(len(same) == len(prompts), f"16 concurrent streams each equal their sequential answer ({len(same)}/16)")
        check(len(set(sequential)) > 1, "the 16 prompts give different answers (the check can fail)")
    finally:
        server.stop()
    check(server.proc.returncode == 0, f"janus serve exits 0 on SIGTERM (got {server.proc.returncode})")

    # -- a queued request whose client disconnects leaves the queue at once -----------------
    one_config = os.path.join(args.work, "one_slot.lua")
    with open(one_config, "w") as f:
        f.write(ONE_SLOT_CONFIG)
    one = Server(args.janus, model, one_config)
    base1 = f"http://127.0.0.1:{one.port}"
    try:
        def sample1(name, suffix=""):
            fams = {f.name: f for f in text_string_to_metric_families(httpx.get(base1 + "/metrics").text)}
            return sum(s.value for s in fams[name].samples if s.name == name + suffix)

        long_n = 2000
        long_ref = hf.decode(reference(ids, long_n))
        streamed = []
        started = threading.Event()

        def long_stream():
            with httpx.stream("POST", base1 + "/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                              json={"prompt": prompt, "max_tokens": long_n, "temperature": 0, "ignore_eos": True,
                                    "stream": True}, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        c = json.loads(line[6:])
                        streamed.append(c["choices"][0]["text"] if c["choices"] else "")
                        started.set()

        runner = threading.Thread(target=long_stream)
        runner.start()
        check(started.wait(60), "one slot: a long stream runs in it")
        sock = socket.create_connection(("127.0.0.1", one.port))
        body = json.dumps({"prompt": "Queued", "max_tokens": 5, "stream": True}).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        deadline = time.time() + 30
        while time.time() < deadline and sample1("janus:num_requests_waiting") != 1:
            time.sleep(0.01)
        check(sample1("janus:num_requests_waiting") == 1 and sample1("janus:num_requests_running") == 1,
              "the second request waits for the slot")
        cancelled0 = sample1("janus:requests_cancelled", "_total")
        sock.close()
        t0 = time.time()
        while time.time() - t0 < 10 and sample1("janus:num_requests_waiting") != 0:
            time.sleep(0.01)
        waited = time.time() - t0
        still_running = sample1("janus:num_requests_running")
        check(sample1("janus:num_requests_waiting") == 0 and waited < 1.0,
              f"its client disconnects: it leaves the queue at once ({waited * 1000:.0f} ms)")
        check(still_running == 1 and runner.is_alive(), "the running stream is not touched")
        check(sample1("janus:requests_cancelled", "_total") == cancelled0 + 1 and sample1("janus:client_disconnects", "_total") >= 1,
              "counted as a cancelled disconnect")
        runner.join(120)
        check("".join(streamed) == long_ref, f"the running stream is token-exact ({len(streamed)} chunks)")
    finally:
        one.stop()
    if failures:
        print(f"{len(failures)} check(s) failed; server log:\n" + "".join(server.log[-40:]))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
