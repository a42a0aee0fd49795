"""janus.Deployment: tokens equal transformers', streaming equals whole, callbacks,
asyncio, inspection, control, refusals."""
import asyncio
import threading

import numpy as np
import pytest

import janus
from conftest import config, fixture_dir


def greedy(qwen):
    return qwen["prompts"], qwen["greedy_tokens"], len(qwen["greedy_tokens"][0])


@pytest.mark.parametrize("side", ["moe", "attention"])
def test_tokens_equal_transformers(qwen, side):
    prompts, want, n = greedy(qwen)
    with janus.Deployment(config(side=side)) as dep:
        reqs = [dep.submit(p, n, stop_at_eos=False) for p in prompts]
        assert [r.result() for r in reqs] == want
        assert all(r.finish_reason() == "length" for r in reqs)
        m = dep.metrics()
        assert isinstance(m, janus.Metrics) and m.completed == len(prompts) and m.failed == 0
        assert m.tokens == sum(len(t) for t in want)


def test_streaming_equals_whole_and_callbacks_see_every_token(qwen):
    prompts, want, n = greedy(qwen)
    seen = {}
    threads = set()

    def on_token(i):
        def f(tok):
            threads.add(threading.get_ident())
            seen.setdefault(i, []).append(tok)
        return f

    with janus.Deployment(config()) as dep:
        reqs = [dep.submit(p, n, stop_at_eos=False, on_token=on_token(i)) for i, p in enumerate(prompts)]
        streamed = [list(r) for r in reqs]
        assert streamed == want
        assert [r.result() for r in reqs] == want
        assert [seen[i] for i in range(len(prompts))] == want
        assert threading.get_ident() not in threads  # a runtime thread, not ours


def test_raising_callback_fails_that_request_only(qwen):
    prompts, want, n = greedy(qwen)

    def boom(tok):
        raise RuntimeError("callback exploded on purpose")

    with janus.Deployment(config()) as dep:
        bad = dep.submit(prompts[0], n, stop_at_eos=False, on_token=boom)
        good = dep.submit(prompts[1], n, stop_at_eos=False)
        with pytest.raises(janus.RequestFailed, match="callback exploded on purpose") as info:
            bad.result()
        assert "Traceback" in str(info.value) and "boom" in str(info.value)
        with pytest.raises(janus.RequestFailed):
            list(bad)
        assert good.result() == want[1]
        assert dep.generate(prompts[2], n, stop_at_eos=False) == want[2]


def test_asyncio(qwen):
    prompts, want, n = greedy(qwen)

    async def main(dep):
        whole = await asyncio.gather(*(dep.generate_async(p, n, stop_at_eos=False) for p in prompts))
        streamed = []
        async for tok in dep.submit(prompts[3], n, stop_at_eos=False):
            streamed.append(tok)
        return whole, streamed

    with janus.Deployment(config()) as dep:
        whole, streamed = asyncio.run(main(dep))
    assert whole == want
    assert streamed == want[3]


def test_config_from_file_and_keywords(qwen, tmp_path):
    prompts, want, n = greedy(qwen)
    f = tmp_path / "dep.lua"
    f.write_text(config(shards=1, instances=2, slots=4))
    with janus.Deployment(f) as dep:
        assert dep.generate(prompts[2], n, stop_at_eos=False) == want[2]
    with janus.Deployment(model={"path": fixture_dir("qwen3_moe")}, attention={"shards": 2},
                          experts={"instances": 2, "slots": 5},
                          workload={"prompts": prompts, "max_new_tokens": n, "ignore_eos": True}) as dep:
        assert dep.run_workload() == want
        assert len(dep.placement()) == 2


def test_inspection_returns_python_objects(qwen):
    prompts, want, n = greedy(qwen)
    with janus.Deployment(config(), compare_policies=True) as dep:
        assert [r.result() for r in [dep.submit(p, n, stop_at_eos=False) for p in prompts]] == want
        actors = dep.actors()
        assert all(isinstance(a, janus.Actor) for a in actors)
        names = {a.name for a in actors}
        assert {"attention-0", "attention-1", "expert-0", "expert-1", "expert-2"} <= names
        g = dep.graph()
        assert g["gate"] == "EGate" and g["policy"] == "aebs"
        assert len(g["shards"]) == 2 and len(g["instances"]) == 3
        placement = dep.placement()
        assert [i["experts"] for i in g["instances"]] == placement
        assert sorted({e for p in placement for e in p}) == list(range(8))
        amax = dep.amax()
        assert amax[0].policy == "aebs" and amax[0].active
        others = {p.policy for p in amax[1:]}
        assert {"primary", "random_replica", "token_balanced"} <= others
        assert [l.layer for l in amax[0].layers] == [0, 2]  # layer 1 is dense (mlp_only_layers)
        assert all(l.batches > 0 and 1 <= l.max <= 8 for l in amax[0].layers)
        h = dep.experts(0)
        assert isinstance(h.per_expert, np.ndarray) and h.per_expert.shape == (8,)
        assert h.per_instance_expert.shape == (3, 8)
        assert h.per_expert.sum() == h.per_instance_expert.sum() > 0
        # Every activation of each expert went to an instance holding it.
        for i, held in enumerate(placement):
            assert all(h.per_instance_expert[i, e] == 0 for e in range(8) if e not in held)
        with pytest.raises((ValueError, janus.NotFoundError)):
            dep.experts(1)  # dense layer: no heat map
        reqs = dep.requests()
        assert all(isinstance(r, janus.RequestInfo) for r in reqs)


def test_pause_step_resume(qwen):
    prompts, want, n = greedy(qwen)
    with janus.Deployment(config()) as dep:
        c = dep.pause()
        assert isinstance(c, janus.StepClock) and c.paused
        req = dep.submit(prompts[0], n, stop_at_eos=False)
        with pytest.raises(TimeoutError):
            req.result(timeout=0.3)
        start = dep.step_clock().step
        dep.step(2)
        # Two steps run, then the clock stops again: the request has made at most two tokens.
        for _ in range(500):
            c = dep.step_clock()
            if c.budget == 0 and not c.in_step and c.step >= start + 2:
                break
            req.result and None
            threading.Event().wait(0.01)
        assert c.step == start + 2
        assert len(req.tokens_so_far()) <= 2
        assert not dep.resume().paused
        assert req.result() == want[0]


@pytest.mark.parametrize("op", ["scale_up", "scale_down", "kill_expert", "kill_shard"])
def test_scale_and_kill_during_a_run_keep_tokens_exact(qwen, op):
    prompts, n = qwen["prompts"], 48
    # The reference engine (held to transformers by test_engine) for 48 tokens; its first
    # 16 are the fixture's.
    want = janus.Engine(fixture_dir("qwen3_moe")).generate_batch(prompts, n, stop_at_eos=False)
    assert [w[:16] for w in want] == qwen["greedy_tokens"]
    with janus.Deployment(config(shards=2, instances=3, slots=4)) as dep:
        dep.slow("attention-0", 2)  # long enough a run that the change lands mid-way
        reqs = [dep.submit(p, n, stop_at_eos=False) for p in prompts]
        it = iter(reqs[0])
        streamed = [next(it)]  # the run is under way
        mid_run = not any(r.done() for r in reqs)
        if op == "scale_up":
            dep.scale(3, 4)
        elif op == "scale_down":
            dep.scale(1, 2)
        elif op == "kill_expert":
            dep.kill("expert-1")
        else:
            dep.kill("attention-1")
        assert mid_run
        streamed += list(it)
        assert [r.result() for r in reqs] == want
        assert streamed == want[0]
        if op.startswith("scale"):
            assert dep.metrics().rescales >= 1
        else:
            assert len(dep.recoveries()) >= 1
        assert dep.generate(prompts[1], n, stop_at_eos=False) == want[1]


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match=r"<python>:1: model\{\}"):
        janus.Deployment('model{path = "/nonexistent", preset = "x"}\n')
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        janus.Deployment(config(policy="nope"))
    with pytest.raises(ValueError, match="not both"):
        janus.Deployment(config(), model={"preset": "tiny-qwen3-moe"})
    with janus.Deployment(config()) as dep:
        with pytest.raises(ValueError):
            dep.generate([100000], 4)
        with pytest.raises(janus.NotFoundError, match="no actor named 'no-such-actor'"):
            dep.kill("no-such-actor")
        with pytest.raises(janus.JanusError):
            dep.scale(1, 1)  # 1 x 4 slots cannot hold 8 experts
        req = dep.submit([5, 17], 4)
        req.result()
        with pytest.raises(ValueError, match="already finished"):
            req.cancel()
    assert dep.closed
    with pytest.raises(ValueError, match="closed"):
        dep.submit([5], 2)


def test_cancel_frees_kv_for_a_request_that_needs_it(qwen):
    prompt = qwen["prompts"][5]  # 20 tokens
    n = 100                      # 120 tokens: 8 blocks of 16
    engine = janus.Engine(fixture_dir("qwen3_moe"))
    want = engine.generate(prompt, n, stop_at_eos=False)
    extra = "attention{shards = 1, kv_blocks = 10, block_size = 16}\n"
    text = config(shards=1).replace("attention{shards = 1}\n", extra)
    with janus.Deployment(text) as dep:
        first = dep.submit(prompt, n, stop_at_eos=False)
        it = iter(first)
        got = [next(it), next(it)]            # admitted and running: 8 of 10 blocks reserved
        second = dep.submit(prompt, n, stop_at_eos=False)
        got.append(next(it))
        assert second.tokens_so_far() == []   # waits: 2 blocks left, it needs 8
        assert any(r.id == second.id and r.state == "queued" for r in dep.requests())
        first.cancel()
        assert second.result(timeout=60) == want  # it fits once the first's blocks are freed
        assert first.finish_reason() == "cancelled"
        partial = first.result()
        assert len(partial) < n and partial == want[:len(partial)] and got == want[:3]
        assert dep.metrics().failed == 0


def test_a_raising_callback_cancels_its_request(qwen):
    prompt, n = qwen["prompts"][5], 100
    text = config(shards=1).replace("attention{shards = 1}\n", "attention{shards = 1, kv_blocks = 10, block_size = 16}\n")
    calls = []

    def once(tok):
        calls.append(tok)
        raise ValueError("stop here")

    with janus.Deployment(text) as dep:
        bad = dep.submit(prompt, n, stop_at_eos=False, on_token=once)
        with pytest.raises(janus.RequestFailed, match="stop here"):
            bad.result()
        # Its 8 blocks came back: a request of the same size runs.
        assert len(dep.generate(prompt, n, stop_at_eos=False)) == n
        assert len(calls) == 1  # not called again after it raised
