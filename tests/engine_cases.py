"""Helpers to build small :class:`EngineInputs` from token lists, a shared cost function,
and hypothesis strategies for random engine scenarios.

Block hashes are computed here in plain Python (a 64-bit blake2b of ``(previous hash,
tuple(block tokens))``, never 0) so the engine tests do not depend on the hashing kernel.

Cost: :func:`cost_model` returns ``(cost_params, step_time_fn)``. With ``oracle.cost`` and
``oracle.kernels.cost`` present it is the real roofline kernel (so the jitted engine, which
reads ``inputs.cost_params``, and the reference use the same numbers); until then it falls
back to a pure-Python affine formula, usable by the reference only.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from hypothesis import strategies as st

from oracle.engine.inputs import EngineConfig, EngineInputs, Router, cdiv

HASH_SEED = 0x5EED_0F_B10C_5EED


# ------------------------------------------------------------------------- hashing
def block_hash(prev: int, tokens: Sequence[int]) -> int:
    """64-bit hash of one full block chained on ``prev``; never 0 (0 = empty map slot)."""
    data = repr((int(prev), tuple(int(t) for t in tokens))).encode()
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return h or 1


def chained_block_hashes(tokens: Sequence[int], block_size: int, lora: int = -1) -> list[int]:
    """Hashes of the full blocks of ``tokens`` (block b = tokens[b*bs:(b+1)*bs]); a LoRA
    adapter (``lora >= 0``) starts its own chains (vLLM mixes it into every block's keys)."""
    out: list[int] = []
    prev = HASH_SEED if lora < 0 else block_hash(HASH_SEED, [-1 - lora])
    for b in range(len(tokens) // block_size):
        prev = block_hash(prev, tokens[b * block_size:(b + 1) * block_size])
        out.append(prev)
    return out


# ------------------------------------------------------------------------- requests
@dataclass
class ReqSpec:
    """One request as token lists. ``arrival_s`` is ignored (NaN) when ``parent >= 0``."""

    prompt: list[int]
    output: list[int]
    arrival_s: float = 0.0
    session: int = -1
    turn: int = 0
    parent: int = -1
    think_s: float = 0.0
    timeout_s: float = math.inf  # the client gives up this long after arrival
    lora: int = -1               # LoRA adapter (-1: none)

    @property
    def tokens(self) -> list[int]:
        return list(self.prompt) + list(self.output)


def add_followup_turns(specs: list[ReqSpec], draw, rng: random.Random, root: int, max_output: int) -> None:
    """Up to two follow-up turns (hypothesis ``draw``) of the last request in ``specs``, each
    prompt its parent's whole sequence plus a few new tokens, in session ``root``."""
    parent = len(specs) - 1
    for turn in range(1, draw(st.integers(0, 2)) + 1):
        par = specs[parent]
        specs.append(ReqSpec(prompt=par.tokens + [rng.randrange(1, 500) for _ in range(rng.randint(1, 10))],
                             output=[rng.randrange(1, 500) for _ in range(rng.randint(1, max_output))],
                             session=root, turn=turn, parent=parent,
                             think_s=draw(st.sampled_from([0.0, 0.005, 0.05, 0.3]))))
        parent = len(specs) - 1


def build_inputs(specs: Sequence[ReqSpec], config: EngineConfig,
                 cost_params: np.ndarray | None = None, draft_cost_params: np.ndarray | None = None) -> EngineInputs:
    """EngineInputs for ``specs`` (row = index in ``specs``) with hashes for config.block_size."""
    n = len(specs)
    bs = config.block_size
    hashes: list[int] = []
    offsets = [0]
    for s in specs:
        hashes.extend(chained_block_hashes(s.tokens, bs, s.lora))
        offsets.append(len(hashes))
    if cost_params is None:
        cost_params = cost_model()[0]
    return EngineInputs(
        config=config,
        arrival_s=np.array([math.nan if s.parent >= 0 else float(s.arrival_s) for s in specs],
                           np.float64),
        prompt_tokens=np.array([len(s.prompt) for s in specs], np.int32),
        output_tokens=np.array([len(s.output) for s in specs], np.int32),
        session=np.array([s.session for s in specs], np.int64),
        turn=np.array([s.turn for s in specs], np.int32),
        parent=np.array([s.parent for s in specs], np.int64),
        think_s=np.array([float(s.think_s) for s in specs], np.float64),
        hash_offsets=np.array(offsets, np.int64).reshape(n + 1),
        hashes=np.array(hashes, np.uint64),
        cost_params=np.asarray(cost_params, np.float64),
        timeout_s=np.array([float(s.timeout_s) for s in specs], np.float64)
        if any(math.isfinite(s.timeout_s) for s in specs) else None,
        draft_cost_params=draft_cost_params,
        lora_adapter=np.array([s.lora for s in specs], np.int32) if any(s.lora >= 0 for s in specs) else None,
        lora_params=lora_test_params() if any(s.lora >= 0 for s in specs) else None,
    )


@functools.lru_cache(maxsize=1)
def lora_test_params() -> np.ndarray:
    """LoRA cost parameters of the test model (rank 16), with loads made long enough (a
    disk read ~ 3 decode steps, a host copy ~ 1) to change the timeline visibly."""
    from oracle.kernels.lora import LORA_PARAM_NAMES  # noqa: PLC0415
    from oracle.lora import build_lora_params  # noqa: PLC0415
    p = build_lora_params("llama-3.1-8b", "h100-sxm", tp=1, max_lora_rank=16, rank=16)
    unit = time_unit_s()
    p[LORA_PARAM_NAMES.index("load_host_s")] = unit
    p[LORA_PARAM_NAMES.index("load_disk_s")] = 3 * unit
    return p


# ------------------------------------------------------------------------- cost
StepTimeFn = Callable[[int, int, int, int, float, int], float]

#: Fallback affine cost (seconds): base + per token + per decode context token + per
#: prefill attention unit + per emitted token.
AFFINE_PARAMS = np.array([2e-3, 1e-5, 1e-6, 2e-8, 1e-7], np.float64)


def affine_step_time_s(params, num_tokens, num_emit, num_decode, decode_ctx_sum,
                       prefill_attn_units, prefill_ctx_sum) -> float:
    return (params[0] + params[1] * num_tokens + params[2] * decode_ctx_sum
            + params[3] * prefill_attn_units + params[4] * num_emit)


def constant_step_time(dt: float) -> StepTimeFn:
    """A cost function that always answers ``dt`` seconds (hand-worked cases)."""
    return lambda *args: dt


@functools.lru_cache(maxsize=1)
def cost_model() -> tuple[np.ndarray, StepTimeFn, bool]:
    """``(cost_params, step_time_fn(params, ...), is_real_kernel)``."""
    try:
        from oracle.cost import build_cost_params  # noqa: PLC0415
        from oracle.kernels.cost import step_time_s  # noqa: PLC0415
    except ImportError:
        return AFFINE_PARAMS, affine_step_time_s, False
    params = _real_cost_params(build_cost_params)
    return params, step_time_s, True


def _real_cost_params(build_cost_params) -> np.ndarray:
    # A small dense model on one GPU keeps steps in the millisecond range.
    return np.asarray(build_cost_params("llama-3.1-8b", "h100-sxm", tp=1), np.float64)


def step_time_fn_for(inputs: EngineInputs) -> StepTimeFn:
    """Python-callable cost of one step for ``inputs`` (same numbers as the jitted engine)."""
    _, fn, _ = cost_model()
    params = inputs.cost_params
    return lambda *args: float(fn(params, *args))


def draft_step_time_fn_for(inputs: EngineInputs) -> StepTimeFn | None:
    """Python-callable cost of one drafter pass (speculative decoding), None without a GPU drafter."""
    if inputs.draft_cost_params is None or not inputs.config.num_speculative_tokens:
        return None
    _, fn, _ = cost_model()
    params = np.asarray(inputs.draft_cost_params, np.float64)
    return lambda *args: float(fn(params, *args))


def head_draft_params() -> np.ndarray:
    """Cost parameters of an EAGLE-style head: one decoder layer of the test model, no CPU terms."""
    from oracle.specdec import draft_head_params  # noqa: PLC0415
    return draft_head_params(cost_model()[0])


@functools.lru_cache(maxsize=1)
def time_unit_s() -> float:
    """Duration of a one-token decode step with a short context: the arrival grid unit."""
    params, fn, _ = cost_model()
    return float(fn(params, 1, 1, 1, 16, 0.0, 0))


# ------------------------------------------------------------------------- strategies
@dataclass
class Scenario:
    specs: list[ReqSpec]
    config: EngineConfig
    pool_kind: str = "unlimited"
    notes: dict = field(default_factory=dict)
    draft_params: np.ndarray | None = None  # the drafter's cost parameters (speculative decoding)

    def inputs(self) -> EngineInputs:
        return build_inputs(self.specs, self.config, draft_cost_params=self.draft_params)

    def with_config(self, **kw) -> Scenario:
        return Scenario(self.specs, replace(self.config, **kw), self.pool_kind, self.notes, self.draft_params)

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        lines = [f"Scenario(pool={self.pool_kind}, config={self.config})"]
        for i, s in enumerate(self.specs):
            lines.append(f"  {i}: p={len(s.prompt)} o={len(s.output)} arr={s.arrival_s!r} "
                         f"sess={s.session} turn={s.turn} parent={s.parent} think={s.think_s!r} "
                         f"prompt={s.prompt} output={s.output}")
        return "\n".join(lines)


def _tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(vocab) for _ in range(n)]


@st.composite
def scenarios(draw, max_requests: int = 40, router: Router | None = None,
              pool_kinds: Sequence[str] = ("tight", "loose", "unlimited"),
              caching: bool | None = None, record_steps: bool | None = None,
              timeouts: bool = False, async_scheduling: bool = False, offload: bool = False,
              spec: bool = False, lora: bool = False) -> Scenario:
    """A small random scenario: 1-3 replicas, any router, block size 1-16, tight / loose /
    unlimited pools, chunked prefill on/off, caching on/off, sessions with follow-ups,
    shared system prompts, arrival ties, and a few requests over ``max_model_len``; with
    ``timeouts``, some clients give up after a few step times (waiting, running, or done
    too late); ``async_scheduling`` sets the engine option; with ``offload``, prefix caching
    is on and each replica has a host KV tier of 1 to ~3 requests' blocks (README "KV offload").;
    with ``spec``, speculative decoding (k 1-4, lookahead 0 or k, draft slots 0 or 1,
    random non-increasing acceptance rates, with or without a GPU drafter).;
    with ``lora``, sessions and lone requests name one of 1-6 adapters (or none)
    and max_loras is 1-3."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    k = lookahead = draft_slots = 0
    if spec:
        k = draw(st.integers(1, 4))
        lookahead = draw(st.sampled_from([0, k]))
        draft_slots = draw(st.integers(0, 1))
    unit = time_unit_s()
    num_replicas = draw(st.integers(1, 3))
    router = draw(st.sampled_from(list(Router))) if router is None else router
    block_size = draw(st.one_of(st.sampled_from([1, 2, 4, 16]), st.integers(1, 16)))
    caching = True if offload else draw(st.booleans()) if caching is None else caching
    chunked = draw(st.booleans())
    vocab = draw(st.sampled_from([2, 50, 10**6]))  # tiny vocabularies give accidental sharing
    system_prompts = [_tokens(rng, draw(st.integers(1, 40)), vocab)
                      for _ in range(draw(st.integers(0, 3)))]

    specs: list[ReqSpec] = []
    horizon = draw(st.sampled_from([16, 2]))  # 2: a burst, everything arrives almost at once
    num_roots = draw(st.integers(1, max(1, max_requests // 2)))
    session_id = 0
    for _ in range(num_roots):
        if len(specs) >= max_requests:
            break
        has_session = draw(st.booleans())
        sys_idx = draw(st.integers(-1, len(system_prompts) - 1))
        prefix = system_prompts[sys_idx] if sys_idx >= 0 else []
        prompt = prefix + _tokens(rng, draw(st.integers(1 if not prefix else 0, 24)), vocab)
        root = ReqSpec(prompt=prompt, output=_tokens(rng, draw(st.integers(1, 12)), vocab),
                       arrival_s=draw(st.integers(0, horizon)) * unit,
                       session=session_id if has_session else -1)
        specs.append(root)
        parent_idx = len(specs) - 1
        if has_session:
            session_id += 1
            for turn in range(1, draw(st.integers(0, 3)) + 1):
                if len(specs) >= max_requests:
                    break
                par = specs[parent_idx]
                child = ReqSpec(prompt=par.tokens + _tokens(rng, draw(st.integers(1, 12)), vocab),
                                output=_tokens(rng, draw(st.integers(1, 8)), vocab),
                                arrival_s=math.nan, session=par.session, turn=turn,
                                parent=parent_idx, think_s=draw(st.integers(0, 8)) * unit)
                specs.append(child)
                parent_idx = len(specs) - 1
    # Shuffle rows (ids) so that id order, arrival order and parent order all differ.
    if draw(st.booleans()):
        perm = list(range(len(specs)))
        rng.shuffle(perm)
        inv = {old: new for new, old in enumerate(perm)}
        specs = [replace(specs[old], parent=inv[specs[old].parent] if specs[old].parent >= 0 else -1)
                 for old in perm]

    if timeouts and draw(st.booleans()):
        specs = [replace(s, timeout_s=draw(st.sampled_from([math.inf, 0.0, 0.5, 1.0, 2.0, 4.0, 9.5])) * unit)
                 if draw(st.booleans()) else s for s in specs]
    lora_kw = {}
    if lora:
        num_adapters = draw(st.integers(1, 6))
        by_session: dict[int, int] = {}
        for k, s in enumerate(specs):
            if s.session >= 0 and s.session in by_session:
                a = by_session[s.session]
            else:
                a = draw(st.integers(-1, num_adapters - 1))
                if s.session >= 0:
                    by_session[s.session] = a
            specs[k] = replace(s, lora=a)
        max_loras = draw(st.integers(1, 3))
        lora_kw = {"max_loras": max_loras, "max_cpu_loras": max_loras + draw(st.integers(0, 2))}
    totals = sorted(len(s.prompt) + len(s.output) for s in specs)
    num_too_long = draw(st.sampled_from([0, 0, 1, 2]))
    num_too_long = min(num_too_long, len(totals) - 1)
    max_model_len = totals[-1 - num_too_long] if num_too_long else totals[-1] + draw(st.integers(0, 64))
    if chunked:  # (validation: at least 1 + k + draft slots with speculative decoding)
        max_num_batched_tokens = max(draw(st.one_of(st.integers(1, 48), st.just(8192))),
                                     1 + k + draft_slots if k else 1)
    else:
        max_num_batched_tokens = max_model_len + draft_slots + draw(st.integers(0, 32))
    max_num_seqs = draw(st.sampled_from([256, 8, 5, 3, 2, 1]))

    pool_kind = draw(st.sampled_from(list(pool_kinds)))
    eligible = [cdiv(min(t + k + lookahead, max_model_len) if k else t, block_size)
                for t in totals if t <= max_model_len]
    need_max = max(eligible, default=1)
    if pool_kind == "unlimited":
        num_gpu_blocks = -1
    elif pool_kind == "loose":
        num_gpu_blocks = need_max * draw(st.integers(2, 6)) + 1
    else:  # tight: exactly what the biggest request needs, plus a block or two
        num_gpu_blocks = need_max + draw(st.integers(0, 1)) + 1
    config = EngineConfig(
        num_replicas=num_replicas, router=router, block_size=block_size,
        num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
        enable_chunked_prefill=chunked, enable_prefix_caching=caching,
        record_steps=draw(st.booleans()) if record_steps is None else record_steps,
        async_scheduling=async_scheduling,
        **lora_kw,
    )
    if offload:
        config = replace(config, host_kv_blocks=draw(st.integers(1, 3 * need_max)),
                         host_load_s_per_block=draw(st.sampled_from([0.0, 0.05, 0.5])) * unit,
                         host_load_latency_s=draw(st.sampled_from([0.0, 0.3])) * unit)
    draft_params = None
    if spec:
        rates = sorted((draw(st.sampled_from([1.0, 0.9, 0.6, 0.3, 0.05])) for _ in range(k)), reverse=True)
        config = replace(config, num_speculative_tokens=k, spec_num_lookahead_tokens=lookahead,
                         spec_draft_slots=draft_slots, spec_acceptance=tuple(rates),
                         spec_seed=draw(st.integers(0, 2**31)))
        draft_params = head_draft_params() if draw(st.booleans()) else None
    return Scenario(specs, config, pool_kind, draft_params=draft_params)


# ------------------------------------------------------------------------- hand-written cases
# Token lists are built from ranges so the hand-worked answers in tests/test_reference_engine.py
# can refer to them ("prompt [1..10]"). The same cases run through the jitted engine in
# tests/test_engine_diff.py (with the real cost instead of a constant step time).
def _r(a: int, b: int) -> list[int]:
    """Tokens a..b inclusive."""
    return list(range(a, b + 1))


def hand_cases() -> dict[str, Scenario]:
    """name -> Scenario of every hand-worked case (see tests/test_reference_engine.py)."""
    C = EngineConfig
    cases = {
        # DESIGN.md §11: A = [1..10] + [11, 12]; B = [1..9] after A; C = [1..12] after B.
        "worked_example": Scenario([
            ReqSpec(_r(1, 10), [11, 12], arrival_s=0.0),
            ReqSpec(_r(1, 9), [100], arrival_s=5.0),
            ReqSpec(_r(1, 12), [101], arrival_s=10.0),
        ], C(block_size=4, num_gpu_blocks=-1, record_steps=True), "unlimited"),
        "single_request": Scenario([ReqSpec(_r(1, 5), _r(6, 9), arrival_s=0.5)],
                                   C(block_size=4), "unlimited"),
        "chunked_prefill": Scenario([
            ReqSpec(_r(1, 10), [11, 12], arrival_s=0.0),
            ReqSpec(_r(201, 203), [204], arrival_s=0.0),
        ], C(block_size=4, max_num_batched_tokens=4), "unlimited"),
        "preempt_last_running": Scenario([
            ReqSpec(_r(1, 2), _r(3, 7), arrival_s=0.0),
            ReqSpec(_r(101, 103), _r(104, 106), arrival_s=0.0),
        ], C(block_size=2, num_gpu_blocks=5, max_num_batched_tokens=3,
             enable_prefix_caching=False), "tight"),
        "preempt_self": Scenario([
            ReqSpec(_r(1, 4), _r(5, 8), arrival_s=0.0),
            ReqSpec(_r(101, 104), _r(105, 108), arrival_s=0.0),
        ], C(block_size=2, num_gpu_blocks=6, enable_prefix_caching=False), "tight"),
        "fcfs_stops_at_first_misfit": Scenario([
            ReqSpec(_r(1, 3), _r(4, 5), arrival_s=0.0),
            ReqSpec(_r(11, 13), [14], arrival_s=0.5),
            ReqSpec([21], [22], arrival_s=0.5),
        ], C(block_size=1, num_gpu_blocks=6, enable_prefix_caching=False), "tight"),
        "max_num_seqs": Scenario([
            ReqSpec([1, 2], [3, 4], arrival_s=0.0),
            ReqSpec([11, 12], [13, 14], arrival_s=0.0),
            ReqSpec([21, 22], [23, 24], arrival_s=0.0),
        ], C(block_size=4, max_num_seqs=2, enable_prefix_caching=False), "unlimited"),
        "chunked_off": Scenario([
            ReqSpec(_r(1, 10), [11, 12], arrival_s=0.0),
            ReqSpec(_r(101, 110), [111, 112], arrival_s=0.0),
        ], C(block_size=4, max_num_batched_tokens=16, max_model_len=16,
             enable_chunked_prefill=False, enable_prefix_caching=False), "unlimited"),
        "rejection": Scenario([
            ReqSpec(_r(1, 4), [5, 6], arrival_s=0.0),
            ReqSpec(_r(11, 18), _r(19, 21), arrival_s=1.0, session=5),
            ReqSpec(_r(11, 21) + [22, 23], [24], session=5, turn=1, parent=1, think_s=2.0),
            ReqSpec(_r(31, 33), [34], arrival_s=4.0),
            ReqSpec(_r(41, 46), _r(47, 49), arrival_s=5.0),
        ], C(num_replicas=2, router=Router.ROUND_ROBIN, block_size=4, num_gpu_blocks=3,
             max_model_len=10), "tight"),
        "conversation": Scenario([
            ReqSpec(_r(1, 6), [7, 8], arrival_s=0.0, session=7),
            ReqSpec(_r(1, 8) + [9, 10, 11], [12], session=7, turn=1, parent=0, think_s=3.0),
            ReqSpec(_r(1, 8) + _r(50, 54), [55], arrival_s=10.0),
        ], C(block_size=4), "unlimited"),
        "conversation_other_replica": Scenario([
            ReqSpec(_r(1, 6), [7, 8], arrival_s=0.0, session=7),
            ReqSpec(_r(1, 8) + [9, 10, 11], [12], session=7, turn=1, parent=0, think_s=3.0),
        ], C(num_replicas=2, router=Router.ROUND_ROBIN, block_size=4), "unlimited"),
        "client_timeouts": Scenario([
            ReqSpec(_r(1, 4), _r(5, 10), arrival_s=0.0, session=1, timeout_s=3.5),
            ReqSpec(_r(11, 14), [15, 16], arrival_s=0.0),
            ReqSpec(_r(21, 23), [24], arrival_s=0.5, timeout_s=0.2),
            ReqSpec([31, 32], [33], session=1, turn=1, parent=0, think_s=1.0),
            ReqSpec([41, 42], [43, 44], arrival_s=10.0, timeout_s=1.5),
        ], C(block_size=4, record_steps=True), "unlimited"),
    }
    return cases
