"""Log-probabilities and the GenerateRequest keywords through Python: each token's
log-probability and top-N equal log_softmax of the engine's logits at that position, in
the Engine and in a Deployment, streamed and whole; every keyword reaches the runtime and
an unknown one is refused by name."""
import asyncio

import numpy as np
import pytest

import janus
from conftest import config, fixture_dir

N_TOP = 5


@pytest.fixture(scope="module")
def engine():
    return janus.Engine(fixture_dir("qwen3_moe"))


def log_softmax(logits):
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def check_against_logits(engine, prompt, gen, n_top):
    """Every TokenLogprobs of `gen` against numpy's log_softmax of Engine.logits(prefix)."""
    assert gen.logprobs is not None and len(gen.logprobs) == len(gen) > 0
    for i, (tok, lp) in enumerate(zip(gen, gen.logprobs)):
        ref = log_softmax(engine.logits(list(prompt) + list(gen[:i])))
        assert isinstance(lp, janus.TokenLogprobs) and lp.token == tok
        assert abs(lp.logprob - ref[tok]) <= 1e-4, (i, lp.logprob, ref[tok])
        # The N largest, most likely first, the lower id first on equal values (a stable sort).
        want_ids = list(np.argsort(-ref, kind="stable")[:n_top])
        assert [t for t, _ in lp.top] == want_ids, i
        assert all(abs(v - ref[t]) <= 1e-4 for t, v in lp.top)


@pytest.mark.parametrize("p", [0, 3, 5])
def test_engine_logprobs_equal_log_softmax_of_the_logits(qwen, engine, p):
    prompt, want = qwen["prompts"][p], qwen["greedy_tokens"][p]
    gen = engine.generate(prompt, len(want), stop_at_eos=False, logprobs=N_TOP)
    assert gen == want and isinstance(gen, janus.Generation) and gen.finish_reason == "length"
    check_against_logits(engine, prompt, gen, N_TOP)
    assert all(lp.top[0][0] == t for t, lp in zip(gen, gen.logprobs))  # greedy takes the most likely
    # A batch gives every prompt its own.
    batch = engine.generate_batch(qwen["prompts"][:3], 4, stop_at_eos=False, logprobs=1)
    for prompt_i, g in zip(qwen["prompts"][:3], batch):
        check_against_logits(engine, prompt_i, g, 1)


def test_deployment_logprobs_streamed_equal_whole_and_the_engine(qwen, engine):
    prompts, want = qwen["prompts"], qwen["greedy_tokens"]
    n = len(want[0])
    with janus.Deployment(config()) as dep:
        reqs = [dep.submit(p, n, stop_at_eos=False, logprobs=N_TOP) for p in prompts]
        streamed = [list(r.events()) for r in reqs]
        whole = [r.result() for r in reqs]
        assert whole == want
        for p, ev, g in zip(prompts, streamed, whole):
            assert [e.token for e in ev] == list(g) and [e.index for e in ev] == list(range(n))
            assert [e.logprobs for e in ev] == g.logprobs  # the same floats, not just close
            check_against_logits(engine, p, g, N_TOP)

        async def main():
            got = [ev async for ev in dep.submit(prompts[4], n, stop_at_eos=False, logprobs=2).events()]
            g = await dep.generate_async(prompts[4], n, stop_at_eos=False, logprobs=2)
            return got, g

        got, g = asyncio.run(main())
        assert [e.logprobs for e in got] == g.logprobs and g == want[4]
        check_against_logits(engine, prompts[4], g, 2)


def test_logprobs_zero_and_none(qwen):
    prompt = qwen["prompts"][2]
    with janus.Deployment(config()) as dep:
        g = dep.generate(prompt, 4, stop_at_eos=False, logprobs=0)
        assert len(g.logprobs) == 4 and all(lp.top == [] and lp.logprob < 0 for lp in g.logprobs)
        r = dep.submit(prompt, 4, stop_at_eos=False)
        assert all(e.logprobs is None for e in r.events())
        assert r.result().logprobs is None and r.result().last_logits is None
        with pytest.raises(ValueError, match="logprobs must be"):
            dep.submit(prompt, 4, logprobs=21)


def test_every_keyword_reaches_the_runtime(qwen, engine):
    prompt, want = qwen["prompts"][3], qwen["greedy_tokens"][3]
    n = len(want)
    sampled = dict(temperature=0.8, top_p=0.9, top_k=N_TOP, seed=7)
    with janus.Deployment(config()) as dep:
        # Sampling: the counter-based draw makes the Deployment's tokens the engine's.
        a = dep.generate(prompt, n, stop_at_eos=False, logprobs=N_TOP, **sampled)
        assert list(a) == engine.generate(prompt, n, stop_at_eos=False, **sampled)
        assert all(t in [x for x, _ in lp.top] for t, lp in zip(a, a.logprobs))  # top_k = N_TOP held
        seeds = {tuple(dep.generate(prompt, n, stop_at_eos=False, **dict(sampled, seed=s))) for s in range(4)}
        assert len(seeds) > 1  # the seed is used
        # eos_ids and stop_at_eos: the fixture has no EOS id of its own.
        stop = want[3]
        g = dep.generate(prompt, n, eos_ids=[stop])
        assert g == want[:want.index(stop) + 1] and g.finish_reason == "eos"
        assert dep.generate(prompt, n, eos_ids=[stop], stop_at_eos=False) == want
        assert engine.generate(prompt, n, eos_ids=[stop]) == g
        # want_prompt_logits: the logits after the prompt.
        g = dep.generate(prompt, 2, stop_at_eos=False, want_prompt_logits=True)
        ref = engine.logits(prompt)
        assert g.last_logits.dtype == np.float32 and g.last_logits.shape == ref.shape
        assert np.max(np.abs(g.last_logits - ref)) / np.max(np.abs(ref)) <= 1e-4
        assert np.array_equal(engine.generate(prompt, 1, want_prompt_logits=True).last_logits, ref)


def test_workload_dicts_carry_every_keyword(qwen):
    with janus.Deployment(config(extra="workload{prompts = {{5, 17}}, max_new_tokens = 3, ignore_eos = true}\n")) as dep:
        (w,) = dep.workload()
        assert set(w) == {"ids", "max_new_tokens"} | set(janus.GenerateOptions.__annotations__)
        assert w["ids"] == [5, 17] and w["stop_at_eos"] is False and w["logprobs"] is None
        assert dep.run_workload() == [dep.generate([5, 17], 3, stop_at_eos=False)]


def test_unknown_or_mistyped_keywords_are_refused_by_name(qwen, engine):
    prompt = qwen["prompts"][1]
    with janus.Deployment(config()) as dep:
        calls = {"submit": dep.submit, "generate": dep.generate, "Engine.generate": engine.generate,
                 "_janus.Deployment.submit": dep._d.submit, "_janus.Engine.generate": engine._e.generate}
        for what, call in calls.items():
            with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
                call(prompt, temprature=0.5)
            with pytest.raises(TypeError, match="temperature must be a float, got str"):
                call(prompt, temperature="hot")
        with pytest.raises(TypeError, match="unexpected keyword argument 'ignore_eos'"):
            engine.generate_batch([prompt], ignore_eos=True)
        with pytest.raises(TypeError, match="unexpected keyword argument 'n'"):
            asyncio.run(dep.generate_async(prompt, n=3))
        with pytest.raises(TypeError, match="eos_ids must be a sequence of ints"):
            dep.submit(prompt, eos_ids=["x"])
        with pytest.raises(TypeError, match="seed must be None or an int >= 0"):
            dep.submit(prompt, seed=-1)
        assert dep.metrics().completed == 0  # none of them reached the runtime
