"""Scheduling policies written in Python (@janus.policy) on the serving path."""
import numpy as np
import pytest

import janus
from conftest import config


@pytest.fixture(scope="module", autouse=True)
def policies():
    @janus.policy("py_primary")
    def py_primary(routing, layout):
        assert routing.dtype == np.int32 and routing.ndim == 2
        return layout.primary[routing]

    state = {"mode": "ok"}

    @janus.policy("py_flaky")
    def flaky(routing, layout, batch_id):
        mode = state["mode"]
        if mode == "raise":
            raise KeyError("policy exploded on purpose")
        if mode == "shape":
            return layout.primary[routing][:, :1]
        if mode == "wrong_expert":
            # Every choice to the replica of the next expert: exists, but holds another expert.
            return layout.primary[(routing + 1) % layout.num_experts]
        if mode == "dtype":
            return layout.primary[routing].astype(np.float32)
        if mode == "none":
            return None
        return layout.primary[routing]

    yield state
    assert janus.unregister_policy("py_primary")
    assert janus.unregister_policy("py_flaky")


def run(policy, prompts, n, **kw):
    with janus.Deployment(config(policy=policy), **kw) as dep:
        reqs = [dep.submit(p, n, stop_at_eos=False) for p in prompts]
        tokens = [r.result() for r in reqs]
        return tokens, dep.amax(), dep.metrics()


def test_python_primary_equals_primary(qwen):
    prompts, want, n = qwen["prompts"], qwen["greedy_tokens"], len(qwen["greedy_tokens"][0])
    py_tokens, py_amax, py_metrics = run("py_primary", prompts, n)
    c_tokens, c_amax, _ = run("primary", prompts, n)
    assert py_tokens == c_tokens == want
    assert py_metrics.policy == "py_primary"
    # Same routing (same tokens), same replicas: the same a_max, batch for batch.
    assert py_amax[0].layers == c_amax[0].layers
    assert janus.policy_cost("py_primary")["calls"] > 0


def test_python_policy_in_the_amax_comparison(qwen):
    prompts, n = qwen["prompts"], 8
    _, amax, _ = run("aebs", prompts, n, compare_policies=True)
    by = {p.policy: p for p in amax}
    assert "py_primary" in by and by["py_primary"].layers == by["primary"].layers
    assert by["aebs"].active and not by["py_primary"].active
    assert by["aebs"].mean <= by["primary"].mean


@pytest.mark.parametrize("mode,message", [
    ("raise", "policy exploded on purpose"),
    ("shape", r"returned an array of shape \(\d+, 1\), not \(\d+, 2\)"),
    ("wrong_expert", r"chose expert \d+ but got replica \d+, which holds expert"),
    ("dtype", "dtype float32, not integers"),
    ("none", "returned None, not an array of replica ids"),
])
def test_broken_policy_fails_the_batch_and_the_deployment_keeps_serving(qwen, policies, mode, message):
    prompts, want, n = qwen["prompts"], qwen["greedy_tokens"], len(qwen["greedy_tokens"][0])
    with janus.Deployment(config(policy="py_flaky")) as dep:
        policies["mode"] = mode
        try:
            with pytest.raises(janus.RequestFailed, match=message) as info:
                dep.generate(prompts[0], n, stop_at_eos=False)
            if mode == "raise":
                assert "Traceback" in str(info.value) and "KeyError" in str(info.value)
        finally:
            policies["mode"] = "ok"
        assert dep.generate(prompts[1], n, stop_at_eos=False) == want[1]
        assert dep.metrics().failed >= 1


def test_registration_refusals_and_assign():
    with pytest.raises(ValueError, match="'aebs' is a built-in policy"):
        janus.policy("aebs")(lambda r, l: r)
    assert "py_primary" in janus.policy_names()
    assert janus.policy_names()[:4] == ["aebs", "random_replica", "primary", "token_balanced"]
    routing = np.array([[0, 1], [1, 2], [2, 3]], dtype=np.int32)
    placement = [[0, 1, 2], [2, 3, 0]]
    reps, amax = janus.assign("py_primary", routing, placement, num_experts=4)
    want, want_amax = janus.assign("primary", routing, placement, num_experts=4)
    assert np.array_equal(reps, want) and amax == want_amax == 3
    _, aebs_amax = janus.assign("aebs", routing, placement, num_experts=4)
    assert aebs_amax == 2  # expert 2 and 0 from instance 1 spread the load
    with pytest.raises(ValueError, match="outside"):
        janus.assign("py_primary", np.array([[9, 0]]), placement, num_experts=4)
    assert not janus.unregister_policy("never_registered")
