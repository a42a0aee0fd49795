"""janus.Engine, the reference engine, against transformers' tokens and logits."""
import numpy as np
import pytest

import janus
from conftest import expected, fixture_dir


@pytest.mark.parametrize("name", ["qwen3_moe", "mixtral"])
def test_greedy_tokens_and_logits_equal_transformers(name):
    want = expected(name)
    engine = janus.Engine(fixture_dir(name))
    n = len(want["greedy_tokens"][0])
    for prompt, tokens, logits in zip(want["prompts"], want["greedy_tokens"], want["last_logits"]):
        assert engine.generate(prompt, n, stop_at_eos=False) == tokens
        got = engine.logits(prompt)
        assert got.dtype == np.float32 and got.shape == (engine.vocab_size,)
        ref = np.asarray(logits, dtype=np.float64)
        assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) <= 1e-4
    # A batch gives the same tokens as one prompt at a time.
    assert engine.generate_batch(want["prompts"], n, stop_at_eos=False) == want["greedy_tokens"]


def test_logits_array_owns_no_copy():
    engine = janus.Engine(fixture_dir("qwen3_moe"))
    a = engine.logits([5, 17])
    assert not a.flags.owndata  # a view of the engine's buffer, kept alive by the array
    assert a.base is not None


def test_refusals():
    with pytest.raises(ValueError, match='runs on "cpu" only'):
        janus.Engine(fixture_dir("qwen3_moe"), device="cuda:0")
    with pytest.raises(janus.JanusError, match="/nonexistent/model"):
        janus.Engine("/nonexistent/model")
    engine = janus.Engine(fixture_dir("qwen3_moe"))
    with pytest.raises(ValueError, match="outside the vocabulary|vocab"):
        engine.generate([100000], 4)
    with pytest.raises(ValueError, match="empty"):
        engine.logits([])
