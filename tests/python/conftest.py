"""Shared fixtures of the Python tests: the transformers fixtures the C++ tests read
(tests/fixtures/*/expected.json, made by tests/fixtures/make_fixtures.py) and small Lua
configs over them. ctest runs these with PYTHONPATH at the build tree's python/ folder."""
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def fixture_dir(name):
    return os.path.join(FIXTURES, name)


def expected(name):
    with open(os.path.join(fixture_dir(name), "expected.json")) as f:
        return json.load(f)


def config(model="qwen3_moe", shards=2, instances=3, slots=4, policy="aebs", side="moe", extra=""):
    """A CPU deployment over a fixture: 12 slots for 8 experts, so experts have replicas."""
    return (f'model{{path = "{fixture_dir(model)}"}}\n'
            f"attention{{shards = {shards}}}\n"
            f"experts{{instances = {instances}, slots = {slots}}}\n"
            f'router{{side = "{side}"}}\n'
            f'scheduler{{policy = "{policy}"}}\n' + extra)


@pytest.fixture(scope="session")
def qwen():
    return expected("qwen3_moe")
