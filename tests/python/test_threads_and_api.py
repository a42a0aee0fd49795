"""The GIL is released while the runtime works, Ctrl-C interrupts a blocking call, and
every public name is documented and has a type stub."""
import ast
import os
import signal
import threading
import time

import pytest

import janus
from conftest import ROOT, config


def test_gil_released_while_waiting(qwen):
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    with janus.Deployment(config()) as dep:
        dep.pause()
        req = dep.submit(qwen["prompts"][0], 8, stop_at_eos=False)
        t = threading.Thread(target=spin)
        t.start()
        before = counter[0]
        with pytest.raises(TimeoutError):
            req.result(timeout=0.5)  # blocks in C++ for half a second
        during = counter[0] - before
        stop.set()
        t.join()
        dep.resume()
        assert req.result() == qwen["greedy_tokens"][0][:8]
    assert during > 1000  # the other thread ran while this one waited


def test_ctrl_c_interrupts_a_blocking_call(qwen):
    with janus.Deployment(config()) as dep:
        dep.pause()
        req = dep.submit(qwen["prompts"][0], 8, stop_at_eos=False)
        timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            req.result()  # would wait forever: the step clock is paused
        assert time.monotonic() - t0 < 5
        with pytest.raises(KeyboardInterrupt):
            threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            next(iter(req))
        dep.resume()
        assert req.result() == qwen["greedy_tokens"][0][:8]


def test_every_public_name_is_documented_and_stubbed():
    for name in janus.__all__:
        obj = getattr(janus, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"janus.{name} has no docstring"
        if isinstance(obj, type) and obj.__module__ == "janus":
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    assert member.__doc__ or attr in ("mean",), f"janus.{name}.{attr} has no docstring"
    with open(os.path.join(ROOT, "python", "janus", "_janus.pyi")) as f:
        stub = ast.parse(f.read())
    stubbed = {n.name: n for n in stub.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    for name in dir(janus._janus):
        if name.startswith("_"):
            continue
        assert name in stubbed, f"janus._janus.{name} is missing from _janus.pyi"
        obj = getattr(janus._janus, name)
        if isinstance(obj, type) and not issubclass(obj, BaseException):
            members = {m.name for m in stubbed[name].body if isinstance(m, ast.FunctionDef)}
            members |= {t.target.id for t in stubbed[name].body if isinstance(t, ast.AnnAssign)}
            for attr in dir(obj):
                if not attr.startswith("_"):
                    assert attr in members, f"janus._janus.{name}.{attr} is missing from _janus.pyi"
