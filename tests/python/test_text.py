"""janus.Tokenizer against the tokenizers/transformers fixtures (tests/fixtures/tokenizers,
tests/fixtures/chat_templates, made by the scripts beside them)."""
import json
import os
import shutil

import pytest

import janus
from conftest import FIXTURES


@pytest.mark.parametrize("name", ["mixtral", "misc_small", "dsv3_small"])
def test_encode_decode_equal_tokenizers(name):
    d = os.path.join(FIXTURES, "tokenizers", name)
    with open(os.path.join(d, "cases.json")) as f:
        cases = json.load(f)
    tok = janus.Tokenizer(d)
    assert tok.vocab_size == cases["vocab_size"]
    for c in cases["cases"]:
        assert tok.encode(c["text"]) == c["ids"], c["text"]
        if "ids_plain" in c:
            assert tok.encode(c["text"], add_special_tokens=False) == c["ids_plain"]
        if "decode" in c:
            assert tok.decode(c["ids"]) == c["decode"]
        if "decode_skip" in c:
            assert tok.decode(c["ids"], skip_special_tokens=True) == c["decode_skip"]


def test_chat_template_equals_transformers(tmp_path):
    with open(os.path.join(FIXTURES, "chat_templates", "cases.json")) as f:
        cases = json.load(f)
    # The mixtral tokenizer with each fixture template as its chat_template.jinja; bos and
    # eos are passed as the fixture says through the template variables.
    checked = 0
    for c in cases:
        d = tmp_path / c["template"].replace(".jinja", "")
        if not d.exists():
            shutil.copytree(os.path.join(FIXTURES, "tokenizers", "mixtral"), d)
            shutil.copy(os.path.join(FIXTURES, "chat_templates", "templates", c["template"]), d / "chat_template.jinja")
        tok = janus.Tokenizer(d)
        extra = dict(c.get("extra") or {})
        extra.setdefault("bos_token", c["bos_token"])
        extra.setdefault("eos_token", c["eos_token"])
        if c.get("error"):
            # The template's raise_exception: transformers raises TemplateError with its text.
            with pytest.raises(ValueError) as info:
                tok.apply_chat_template(c["messages"], add_generation_prompt=c["add_generation_prompt"], **extra)
            assert str(info.value).endswith(c["error"]), (c["template"], c["name"])
        else:
            got = tok.apply_chat_template(c["messages"], add_generation_prompt=c["add_generation_prompt"], **extra)
            assert got == c["expected"], (c["template"], c["name"])
        checked += 1
    assert checked == len(cases) > 10


def test_tokenize_and_refusals(tmp_path):
    d = os.path.join(FIXTURES, "tokenizers", "mixtral")
    tok = janus.Tokenizer(d)
    with pytest.raises(janus.JanusError):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])  # mixtral's fixture has no template
    with pytest.raises(ValueError):
        tok.decode([10 ** 8])
    with pytest.raises(janus.JanusError):
        janus.Tokenizer(tmp_path)  # no tokenizer.json
