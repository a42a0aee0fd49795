"""Janus from Python: the reference engine, live deployments, the simulator, tokenizers,
and scheduling policies written in Python.

    import janus
    with janus.Deployment("examples/configs/default.lua") as dep:
        req = dep.submit([5, 17, 99], max_new_tokens=16, logprobs=2)
        for ev in req.events():    # tokens as they come, with their log-probabilities
            print(ev.token, ev.logprobs.logprob, ev.logprobs.top)
        print(req.result())        # the whole list, the same tokens (a Generation)
        print(dep.amax())          # a_max per layer, per policy

Every call that makes tokens (``Deployment.submit``, ``generate``, ``generate_async``,
``Engine.generate``, ``generate_batch``) takes the same keywords: ``GenerateOptions``.

Threads: every call into the runtime releases the GIL, so other Python threads run while
it works, and a blocking call (``Request.result()``, iteration) wakes every 20 ms to let
Ctrl-C through. Callbacks into Python -- a request's ``on_token`` and a ``@janus.policy``
function -- run on a runtime worker thread (the thread of the Frontend actor for
``on_token``, of the Scheduler actor for policies) with the GIL taken; they should be quick,
since the runtime waits for them. An exception raised in ``on_token`` fails that request
(``RequestFailed`` carrying the traceback); one raised in a policy, or a wrong answer,
fails that layer batch's requests, and the deployment goes on serving the others.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Mapping, Optional, Sequence, TypedDict, Union

import numpy as np

from . import _janus
from ._janus import JanusError, NotFoundError, ReplicaLayout, RequestFailed

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from 3.11; only type checkers read it here

__all__ = [
    "Engine", "Deployment", "Request", "GenerateOptions", "Generation", "TokenLogprobs", "TokenEvent", "Tokenizer",
    "simulate", "policy", "unregister_policy", "policy_names", "policy_cost", "assign", "ReplicaLayout", "JanusError",
    "NotFoundError", "RequestFailed", "Actor", "RequestInfo", "LayerAmax", "PolicyAmax", "Metrics", "StepClock", "Heatmap",
    "Recovery", "lua_config",
]

PathLike = Union[str, "os.PathLike[str]"]


# -- requests and their results -----------------------------------------------------------

class GenerateOptions(TypedDict, total=False):
    """The keywords every call that makes tokens takes besides ``max_new_tokens`` (16 by
    default): the fields of the runtime's GenerateRequest (runtime/model/reference_engine.h).
    Any other keyword, or a value of the wrong type, raises TypeError naming it; a value out
    of range raises ValueError.

    - ``temperature`` (0.0): 0 is greedy (argmax, the lowest id on ties).
    - ``top_p`` (1.0), ``top_k`` (0: no limit): nucleus and top-k sampling.
    - ``seed`` (None, which is 0): with the token's index, the only input of its random draw,
      so the same request gives the same tokens whatever it is batched with.
    - ``stop_at_eos`` (True): stop after an EOS id; ``eos_ids`` (the config's when empty)
      are the ids that count as EOS.
    - ``logprobs`` (None): 0..20 gives each token its log-probability and those of the
      ``logprobs`` most likely tokens (``TokenLogprobs``, in ``Generation.logprobs`` and
      each ``TokenEvent``), of the model's raw distribution: log_softmax of the logits,
      before temperature, top-k and top-p.
    - ``want_prompt_logits`` (False): keep the logits after the prompt
      (``Generation.last_logits``).
    """
    temperature: float
    top_p: float
    top_k: int
    seed: Optional[int]
    stop_at_eos: bool
    eos_ids: Sequence[int]
    logprobs: Optional[int]
    want_prompt_logits: bool


@dataclass(frozen=True)
class TokenLogprobs:
    """A generated token's log-probability and the most likely tokens' (``top``: (token id,
    log-probability) pairs, most likely first; equal logits: the lower id first). The
    chosen token need not be among them when it was sampled."""
    token: int
    logprob: float
    top: list


@dataclass(frozen=True)
class TokenEvent:
    """A streamed token (``Request.events()``): its id, its index among the request's new
    tokens, and its ``TokenLogprobs`` when the request asked for them (else None)."""
    token: int
    index: int
    logprobs: Optional[TokenLogprobs]

    @staticmethod
    def _of(item: tuple) -> "TokenEvent":
        tok, index, lp = item
        return TokenEvent(tok, index, None if lp is None else TokenLogprobs(tok, lp[0], lp[1]))


class Generation(list):
    """The tokens a request generated: a ``list[int]`` (equal to the plain list of them)
    that also carries ``prompt``, ``finish_reason`` (``"length"``, ``"eos"`` or
    ``"cancelled"``), ``logprobs`` (one ``TokenLogprobs`` per token when the request asked
    for them with ``logprobs=N``, else None) and ``last_logits`` (float32 [vocab] after the
    prompt with ``want_prompt_logits=True``, else None)."""
    __slots__ = ("prompt", "finish_reason", "logprobs", "last_logits")

    def __init__(self, tokens: Sequence[int] = (), prompt: Sequence[int] = (), finish_reason: str = "",
                 logprobs: Optional[list] = None, last_logits: Optional[np.ndarray] = None) -> None:
        super().__init__(tokens)
        self.prompt = list(prompt)
        self.finish_reason = finish_reason
        self.logprobs = logprobs
        self.last_logits = last_logits

    @staticmethod
    def _of(d: Mapping[str, Any]) -> "Generation":
        lps = d["logprobs"]
        if lps is not None:
            lps = [TokenLogprobs(t, lp, top) for t, (lp, top) in zip(d["tokens"], lps)]
        return Generation(d["tokens"], d["prompt"], d["finish_reason"], lps, d["last_logits"])


# -- inspection results as Python objects --------------------------------------------------

@dataclass(frozen=True)
class Actor:
    """One actor of a deployment, as the console's ``actors()`` shows it."""
    name: str
    kind: str
    device: str
    node: str
    alive: bool
    messages: int
    busy_s: float
    busy_fraction: float
    mailbox: int
    dropped: int
    slow_ms: float


@dataclass(frozen=True)
class RequestInfo:
    """A request the Frontend knows of (queued, running or finished)."""
    id: int
    state: str
    shard: int
    prompt_tokens: int
    generated: int
    max_new_tokens: int
    age_s: float
    ttft_s: Optional[float]


@dataclass(frozen=True)
class LayerAmax:
    """a_max of one MoE layer: the most distinct experts any instance ran in a layer batch."""
    layer: int
    batches: int
    mean: float
    max: int


@dataclass(frozen=True)
class PolicyAmax:
    """a_max per layer under one policy: the active one, or what another would have done."""
    policy: str
    active: bool
    layers: list

    @property
    def mean(self) -> float:
        """The mean a_max over every layer batch of every layer."""
        n = sum(l.batches for l in self.layers)
        return sum(l.mean * l.batches for l in self.layers) / n if n else 0.0


@dataclass(frozen=True)
class StepClock:
    """The Frontend's step clock (pause/step/resume)."""
    paused: bool
    budget: int
    step: int
    in_step: bool


@dataclass(frozen=True)
class Heatmap:
    """Expert activations of one MoE layer so far: per expert [E] and per (instance, expert) [I, E]."""
    layer: int
    num_experts: int
    num_instances: int
    per_expert: np.ndarray
    per_instance_expert: np.ndarray
    placement: list


@dataclass(frozen=True)
class Recovery:
    """A member that died and when its replacement was in place (steady-clock seconds)."""
    what: str
    detected_s: float
    installed_s: float
    died_s: float


@dataclass(frozen=True)
class Metrics:
    """A deployment's counters, latencies (seconds) and a_max."""
    completed: int
    failed: int
    queued: int
    running: int
    tokens: int
    elapsed_s: float
    tokens_per_s: float
    ttft_s: dict
    tpot_s: dict
    policy: str
    amax: list
    actors: list
    epoch: int
    rescales: int
    rescales_failed: int
    last_rescale_failure: str


# -- the reference engine ------------------------------------------------------------------

class Engine:
    """The single-process reference engine over a Hugging Face checkpoint directory: the
    oracle every other path is held to (itself held to transformers by the fixtures).

    ``device`` must be ``"cpu"``: the reference engine has no other; a ``Deployment`` runs
    on CUDA devices.
    """

    def __init__(self, model_dir: PathLike, device: str = "cpu") -> None:
        self._e = _janus.Engine(os.fspath(model_dir), device)

    def generate(self, ids: Sequence[int], max_new_tokens: int = 16, **kw: Unpack[GenerateOptions]) -> Generation:
        """Generates up to ``max_new_tokens`` after ``ids`` (greedy unless ``temperature`` > 0;
        the keywords: ``GenerateOptions``)."""
        return Generation._of(self._e.generate(list(ids), max_new_tokens=max_new_tokens, **kw))

    def generate_batch(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 16,
                       **kw: Unpack[GenerateOptions]) -> list:
        """Runs every prompt as one batch with the same keywords: one ``Generation`` each,
        the same tokens as one at a time, bit for bit."""
        return [Generation._of(d) for d in self._e.generate_batch([list(p) for p in prompts],
                                                                  max_new_tokens=max_new_tokens, **kw)]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """The logits after the last prompt position, float32 [vocab] (the array owns the
        engine's buffer: no copy)."""
        return self._e.logits(list(ids))

    @property
    def vocab_size(self) -> int:
        return self._e.vocab_size

    @property
    def model_dir(self) -> str:
        return self._e.model_dir


# -- deployments ---------------------------------------------------------------------------

def _lua_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(v.item() if hasattr(v, "item") else v)
    if isinstance(v, (str, os.PathLike)):
        return json.dumps(os.fspath(v))  # a JSON string is a valid Lua string literal for these
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_lua_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "{" + ", ".join(_lua_value(x) for x in v) + "}"
    raise TypeError(f"cannot write {type(v).__name__} into a Lua config")


def lua_config(**sections: Mapping[str, Any]) -> str:
    """The Lua config text for keyword sections: ``lua_config(model={"preset": "tiny-qwen3-moe"},
    attention={"shards": 2})`` is ``model{preset = "tiny-qwen3-moe"}\\nattention{shards = 2}``."""
    lines = []
    for name, body in sections.items():
        if not isinstance(body, Mapping):
            raise TypeError(f"section {name}: give a dict of its keys, got {type(body).__name__}")
        lines.append(f"{name}{_lua_value(body)}")
    return "\n".join(lines) + "\n"


def _is_config_file(config: Any) -> bool:
    if isinstance(config, os.PathLike):
        return True
    return isinstance(config, str) and "\n" not in config and "{" not in config


class _Events:
    # Request.events(): the same stream as iterating the request, as TokenEvents.
    def __init__(self, request: "Request") -> None:
        self._request = request

    def __iter__(self) -> Iterator[TokenEvent]:
        return (TokenEvent._of(x) for x in self._request._stream(True))

    def __aiter__(self) -> AsyncIterator[TokenEvent]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[TokenEvent]:
        async for x in self._request._astream(True):
            yield TokenEvent._of(x)


class Request:
    """A submitted request. ``result()`` waits for all of its tokens; iterating
    (``for tok in req`` or ``async for tok in req``) yields them as they are made, the same
    tokens, and ``events()`` yields them as ``TokenEvent``s (with their log-probabilities).
    The iterators share one position: a token one of them took, the others do not see. A
    failed request raises ``RequestFailed`` from any of them."""

    def __init__(self, r: "_janus.Request") -> None:
        self._r = r

    @property
    def id(self) -> int:
        return self._r.id

    def done(self) -> bool:
        """True once the request finished or failed."""
        return self._r.done()

    def result(self, timeout: Optional[float] = None) -> Generation:
        """The generated tokens (a ``Generation``: a list that also carries the finish reason
        and, when asked, log-probabilities and prompt logits); waits (Ctrl-C interrupts) up
        to ``timeout`` seconds (TimeoutError), forever when None."""
        return Generation._of(self._r.result(timeout))

    def finish_reason(self, timeout: Optional[float] = None) -> str:
        """``"length"``, ``"eos"`` or ``"cancelled"``; waits for the end like ``result()``."""
        return self._r.result(timeout)["finish_reason"]

    def tokens_so_far(self) -> list:
        """The tokens streamed so far, without waiting."""
        return self._r.tokens_so_far()

    def cancel(self) -> None:
        """Ends the request at the next step (Deployment::cancel): its KV blocks are freed
        and its slot goes to the next request. ``result()`` then gives the tokens made so far
        and ``finish_reason()`` is ``"cancelled"`` (unless its last token was already being
        made). Cancelling a finished request raises ValueError."""
        self._r.cancel()

    def events(self) -> _Events:
        """The streamed tokens as ``TokenEvent``s, for ``for ev in req.events()`` and
        ``async for ev in req.events()``."""
        return _Events(self)

    def __iter__(self) -> Iterator[int]:
        return self._stream(False)

    def __aiter__(self) -> AsyncIterator[int]:
        return self._astream(False)

    def _stream(self, events: bool) -> Iterator[Any]:
        while True:
            x = self._r.next_token(None, events)
            if x is None:
                return
            yield x

    async def _astream(self, events: bool) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._r.set_waker(lambda: loop.call_soon_threadsafe(event.set))
        try:
            while True:
                event.clear()  # before polling: a token that comes after the poll sets it again
                x = self._r.poll(events)
                if x is None:
                    return
                if not (isinstance(x, int) and x < 0):
                    yield x
                    continue
                await event.wait()  # the runtime wakes us with each token and at the end
        finally:
            self._r.set_waker(None)

    async def result_async(self) -> Generation:
        """``result()`` for asyncio: the loop keeps running while the request does."""
        async for _ in self:
            pass
        return Generation._of(self._r.result(0.0 if self._r.done() else None))


class Deployment:
    """A live disaggregated deployment (actors/deployment.h): one actor system in this
    process serving the config's actor graph.

    ``config`` is a Lua config file (a path), or Lua config text; or leave it out and give
    the sections as keyword arguments (``Deployment(model={"path": d}, attention={"shards": 2})``).
    ``threads`` (0: the cores), ``compare_policies`` (the Scheduler also records the a_max
    every other policy would give: ``amax()``), ``trace`` and ``null_backend`` are
    ``DeploymentOptions``. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, config: Optional[PathLike] = None, *, threads: int = 0, compare_policies: bool = False,
                 trace: bool = False, null_backend: bool = False, **sections: Mapping[str, Any]) -> None:
        if config is None:
            if not sections:
                raise ValueError("Deployment: give a config (a Lua file or text) or its sections as keyword arguments")
            config = lua_config(**sections)
        elif sections:
            raise ValueError("Deployment: give a config or keyword sections, not both")
        if _is_config_file(config):
            self._d = _janus.Deployment.from_file(os.fspath(config), threads, compare_policies, trace, null_backend)
        else:
            self._d = _janus.Deployment.from_string(str(config), "<python>", threads, compare_policies, trace, null_backend)

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Fails whatever is queued or running ("shut down") and stops every actor. Idempotent."""
        self._d.close()

    @property
    def closed(self) -> bool:
        return self._d.closed

    def submit(self, ids: Sequence[int], max_new_tokens: int = 16, *, on_token: Optional[Callable[[int], None]] = None,
               **kw: Unpack[GenerateOptions]) -> Request:
        """Submits a request and returns at once (the keywords: ``GenerateOptions``; a
        request they make invalid raises ValueError here). ``on_token(token)``, when given, is called
        for each token on the Frontend's runtime thread with the GIL taken; if it raises,
        the request is cancelled (its KV freed) and fails with the traceback. Callbacks of
        one deployment never run at once and hold up every request while they run; one may
        call ``submit()`` and ``Request.cancel()``, but not the calls that wait for the
        runtime (``metrics()``, ``scale()``, ``result()``, ...), which would wait for itself
        (actors/request_events.h)."""
        return Request(self._d.submit(list(ids), on_token, max_new_tokens=max_new_tokens, **kw))

    def generate(self, ids: Sequence[int], max_new_tokens: int = 16, **kw: Any) -> Generation:
        """``submit(...).result()``."""
        return self.submit(ids, max_new_tokens, **kw).result()

    async def generate_async(self, ids: Sequence[int], max_new_tokens: int = 16, **kw: Any) -> Generation:
        """``generate`` for asyncio."""
        return await self.submit(ids, max_new_tokens, **kw).result_async()

    def workload(self) -> list:
        """The config's workload{} prompts as keyword dicts for ``submit(**w)``: ``ids``,
        ``max_new_tokens`` and every ``GenerateOptions`` keyword."""
        return [dict(w) for w in self._d.workload()]

    def plan(self) -> list:
        """The generated arrivals of workload{arrivals=...} that ``janus bench-serve`` serves
        (the same seeded draw): dicts of ``at_s``, ``ids``, ``max_new_tokens``."""
        return self._d.plan()

    def run_workload(self) -> list:
        """Submits every workload{} prompt at once and returns their tokens."""
        reqs = [self.submit(**w) for w in self.workload()]
        return [r.result() for r in reqs]

    # -- inspection and control: the console's commands ---------------------------------
    def actors(self) -> list:
        """Every actor: name, kind, device, node, liveness, messages, busy time, mailbox, drops."""
        return [Actor(**a) for a in self._d.actors()]

    def requests(self) -> list:
        """The requests the Frontend knows of (``RequestInfo``: queued, running, finished)."""
        return [RequestInfo(**r) for r in self._d.requests()]

    def graph(self) -> dict:
        """The resolved actor graph: gate side, policy, shards, expert instances (with
        their experts) and the other actors."""
        return self._d.graph()

    def placement(self) -> list:
        """The experts each instance holds, in slot order."""
        return self._d.placement()

    def amax(self) -> list:
        """``PolicyAmax`` of the active policy, then (``compare_policies=True``) of every
        other built-in or registered policy on the same layer batches."""
        return [PolicyAmax(p["policy"], p["active"], [LayerAmax(**l) for l in p["layers"]]) for p in self._d.amax()]

    def experts(self, layer: int) -> Heatmap:
        """The heat map of a MoE layer's expert activations so far (NumPy arrays); a dense
        layer or one out of range raises."""
        return Heatmap(**self._d.experts(layer))

    def metrics(self) -> Metrics:
        """Counters, tokens/s, TTFT/TPOT percentiles (seconds), a_max per layer, the actors,
        the membership epoch and rescales."""
        m = self._d.metrics()
        m["amax"] = [LayerAmax(**l) for l in m["amax"]]
        m["actors"] = [Actor(**a) for a in m["actors"]]
        return Metrics(**m)

    def scale(self, attention: int, moe: int) -> None:
        """Rescales to ``attention`` shards and ``moe`` instances while serving; returns once
        in place (a failed step rolls back and raises)."""
        self._d.scale(attention, moe)

    def kill(self, name: str) -> None:
        """Kills one actor ("expert-2", "attention-0"): fault injection."""
        self._d.kill(name)

    def slow(self, name: str, ms: float) -> None:
        """Makes an actor wait ``ms`` before each message (0 undoes it)."""
        self._d.slow(name, ms)

    def pause(self) -> StepClock:
        """Stops starting steps at the next step boundary (requests wait, nothing is lost)."""
        return StepClock(**self._d.pause())

    def step(self, n: int = 1) -> StepClock:
        """While paused: runs ``n`` more steps, then stops again."""
        return StepClock(**self._d.step(n))

    def resume(self) -> StepClock:
        """Goes on stepping after ``pause()``."""
        return StepClock(**self._d.resume())

    def step_clock(self) -> StepClock:
        """The step clock now: paused, steps still allowed, the step number, mid-step."""
        return StepClock(**self._d.step_clock())

    def recoveries(self) -> list:
        """Members that died and how long their replacement took (``Recovery``)."""
        return [Recovery(**r) for r in self._d.recoveries()]

    def actor_names(self) -> list:
        """The actors' names (for kill() and slow())."""
        return self._d.actor_names()

    @property
    def vocab_size(self) -> int:
        return self._d.vocab_size


# -- the simulator -------------------------------------------------------------------------

def simulate(config: PathLike, study: bool = False, system: Optional[str] = None) -> dict:
    """Runs a config in virtual time (``janus simulate``). Serving mode returns the summary
    with ``requests``, ``decisions`` and ``devices`` as lists of records; ``study=True``
    returns the per-GPU throughput study's ``rows`` and ``candidates``. Each list of records
    goes straight into ``pandas.DataFrame``."""
    if _is_config_file(config):
        return _janus.simulate_file(os.fspath(config), study, system)
    return _janus.simulate_string(str(config), "<python>", study, system)


# -- tokenizers ----------------------------------------------------------------------------

class Tokenizer:
    """A Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json,
    generation_config.json): encodes and decodes as the ``tokenizers`` crate does, and
    renders the model's chat template as transformers' ``apply_chat_template`` does."""

    def __init__(self, model_dir: PathLike) -> None:
        self._t = _janus.Tokenizer(os.fspath(model_dir))

    def encode(self, text: str, add_special_tokens: bool = True) -> list:
        """The ids ``tokenizers`` gives for ``text`` (with the post-processor's special tokens
        unless ``add_special_tokens=False``)."""
        return self._t.encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids``, as ``tokenizers`` decodes it; an id outside the vocabulary raises."""
        return self._t.decode(list(ids), skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = False, **kwargs: Any) -> Union[str, list]:
        """The prompt text for ``messages`` (or its ids with ``tokenize=True``, encoded
        without adding special tokens, as transformers does); ``kwargs`` become template
        variables (tools, enable_thinking, ...)."""
        text = self._t.apply_chat_template_json(json.dumps(list(messages)), add_generation_prompt,
                                                json.dumps(kwargs) if kwargs else "")
        return self._t.encode(text, False) if tokenize else text

    @property
    def vocab_size(self) -> int:
        return self._t.vocab_size

    @property
    def bos_id(self) -> Optional[int]:
        return self._t.bos_id

    @property
    def eos_ids(self) -> list:
        return self._t.eos_ids

    def token_to_id(self, token: str) -> Optional[int]:
        """The id of a vocabulary or added token, or None."""
        return self._t.token_to_id(token)

    def id_to_token(self, id: int) -> str:
        """The vocabulary string of ``id`` ("" when there is none)."""
        return self._t.id_to_token(id)


# -- scheduling policies in Python ---------------------------------------------------------

def policy(name: str) -> Callable[[Callable], Callable]:
    """Registers a scheduling policy under ``name`` for ``scheduler{policy="name"}``::

        @janus.policy("first_replica")
        def first(routing, layout):          # routing: int32 [tokens, top_k] expert ids
            return layout.primary[routing]   # the replica of every (token, expert)

    The function gets the layer batch's routing and the ``ReplicaLayout`` (and, when it takes
    a third argument, the batch id that seeded policies use), and returns an integer array
    of the routing's shape: the physical replica of each choice, which must hold that
    expert. It runs on the Scheduler's runtime thread with the GIL taken. Raising, or a
    wrong answer (shape, dtype, a replica that does not exist or holds another expert),
    fails that layer batch with the error; the deployment keeps serving. Registering a name
    again replaces the policy (deployments already made keep theirs); built-in names are
    refused."""

    def register(fn: Callable) -> Callable:
        try:
            n = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            n = 3
        call = fn if n >= 3 else (lambda routing, layout, batch_id: fn(routing, layout))
        _janus.register_policy(name, call)
        return fn

    return register


def unregister_policy(name: str) -> bool:
    """Removes a policy registered with ``@janus.policy``; False when there was none."""
    return _janus.unregister_policy(name)


def policy_names() -> list:
    """The built-in policies, then the registered ones."""
    return _janus.policy_names()


def policy_cost(name: str) -> dict:
    """How often a Python policy ran and its mean cost per layer batch (``us_per_batch``,
    GIL acquisition included), since it was registered."""
    return _janus.policy_cost(name)


def assign(name: str, routing: np.ndarray, placement: Sequence[Sequence[int]], num_experts: int,
           slots: Optional[int] = None, seed: int = 0, batch_id: int = 0) -> tuple:
    """Runs a policy (built-in or registered) on one routing outside a deployment, with the
    same checks: returns ``(replicas, a_max)``."""
    if slots is None:
        slots = max(len(p) for p in placement)
    return _janus.assign(name, np.asarray(routing, dtype=np.int32), [list(p) for p in placement], num_experts, slots,
                         seed, batch_id)
