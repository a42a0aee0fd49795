"""janus.simulate gives the tables `janus simulate` writes, as records."""
import csv
import os
import re
import subprocess

import pytest

import janus
from conftest import ROOT

PROFILE = os.path.join(ROOT, "examples", "profiles", "h100-dsv2-slice.json")
CLI = os.environ.get("JANUS_CLI", os.path.join(ROOT, "build", "janus"))


def cli(*args):
    if not os.path.exists(CLI):
        pytest.skip(f"no janus command at {CLI} (ctest sets JANUS_CLI)")
    return subprocess.run([CLI, "simulate", *args, "--quiet"], check=True, capture_output=True, text=True).stdout


def test_study_rows_equal_the_cli(tmp_path):
    cfg = tmp_path / "study.lua"
    cfg.write_text(f'simulate{{profile = "{PROFILE}", shape = "deepseek-v2", study_batches = {{64, 256}}, '
                   f"study_slos_ms = {{150}}, max_devices = 16}}\n")
    cli(str(cfg), "--study", "--out", str(tmp_path / "out"))
    with open(tmp_path / "out" / "study.csv") as f:
        want = list(csv.DictReader(f))
    got = janus.simulate(cfg, study=True)
    assert len(got["rows"]) == len(want) == 8  # 4 systems x 2 batches x 1 SLO
    for g, w in zip(got["rows"], want):
        assert g["system"] == w["system"] and g["batch"] == int(w["batch"]) and g["feasible"] == (w["feasible"] == "1")
        if g["feasible"]:
            assert g["config"] == w["config"] and g["devices"] == int(w["devices"])
            assert g["tpot_ms"] == pytest.approx(float(w["tpot_ms"]), rel=1e-4)
            assert g["tokens_per_s_per_device"] == pytest.approx(float(w["tokens_per_s_per_device"]), rel=1e-4)
    assert len(got["candidates"]) > len(got["rows"])


def test_serving_equals_the_cli(tmp_path):
    text = (f'simulate{{profile = "{PROFILE}", shape = "deepseek-v2"}}\n'
            "attention{shards = 1, max_batch = 256}\nexperts{instances = 6}\n"
            'workload{arrivals = "poisson", rate = 20, requests = 200, prompt_len = 16, output_len = 64, '
            "slo = {tpot_ms = 150, ttft_ms = 3000}}\n")
    cfg = tmp_path / "serve.lua"
    cfg.write_text(text)
    out = cli(str(cfg))
    m = re.search(r"(\d+) of (\d+) requests done, (\d+) tokens in (\d+) steps", out)
    assert m, out
    for got in (janus.simulate(cfg), janus.simulate(text)):  # a file, and the same config as text
        assert (got["completed"], got["submitted"], got["tokens"], got["steps"]) == tuple(int(x) for x in m.groups())
        assert len(got["requests"]) == got["completed"]
        assert all(r["tpot_ms"] > 0 for r in got["requests"])


def test_refusals():
    with pytest.raises(ValueError, match="needs 'profile'"):
        janus.simulate('attention{shards = 1}\n')
    with pytest.raises(ValueError, match="system"):
        janus.simulate(f'simulate{{profile = "{PROFILE}", shape = "deepseek-v2"}}\nworkload{{prompts = {{{{1, 2}}}}}}\n',
                       system="nope")


def test_a_python_policy_runs_in_virtual_time():
    @janus.policy("sim_py_primary")
    def py_primary(routing, layout):
        return layout.primary[routing]

    try:
        base = (f'simulate{{profile = "{PROFILE}", shape = "deepseek-v2"}}\n'
                "attention{shards = 1, max_batch = 256}\nexperts{instances = 6}\n"
                'workload{arrivals = "poisson", rate = 20, requests = 60, prompt_len = 16, output_len = 32}\n')
        got = janus.simulate(base + 'scheduler{policy = "sim_py_primary"}\n')
        want = janus.simulate(base + 'scheduler{policy = "primary"}\n')
        aebs = janus.simulate(base)
        assert janus.policy_cost("sim_py_primary")["calls"] > 0
        keys = ("completed", "tokens", "steps", "virtual_s")
        assert [got[k] for k in keys] == [want[k] for k in keys]
        assert got["requests"] == want["requests"]
        # primary runs more distinct experts per instance than AEBS: the same load takes longer.
        assert sum(r["tpot_ms"] for r in aebs["requests"]) < sum(r["tpot_ms"] for r in want["requests"])
    finally:
        janus.unregister_policy("sim_py_primary")
