"""Workloads for the conformance suite: hand-made minimal cases, the bundled trace formats,
and hypothesis strategies.

A :class:`Case` is a list of requests as token lists (``engine_cases.ReqSpec``: prompt,
output, arrival, session, turn, parent, think time) plus an ``EngineConfig`` for one
replica. vLLM receives the token ids as they are and samples the output tokens in order, so
the blocks a request generates hash like real ones. Trace cases also carry the
``EngineInputs`` built by the project's own workload path (trace reader -> ``Workload`` ->
``shared_block_hashes``); their token lists come from the workload's content segments: each
distinct token ``(segment key, offset)`` gets its own integer id.

Every case satisfies vLLM's config checks (``max_num_batched_tokens >= max_num_seqs``;
without chunked prefill ``max_num_batched_tokens >= max_model_len``), and the generators
do not produce requests the engine would reject (``p + o > max_model_len`` or more blocks
than the pool); the vLLM driver mirrors those rejections anyway.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

import numpy as np  # noqa: E402
from engine_cases import ReqSpec, hand_cases, time_unit_s  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from oracle.engine.inputs import EngineConfig, EngineInputs, Router, cdiv  # noqa: E402

ROOT = _TESTS.parent
SCENARIO_DATA = ROOT / "scenarios" / "data"


@dataclass
class Case:
    name: str
    specs: list[ReqSpec]
    config: EngineConfig
    what: str = ""
    inputs: EngineInputs | None = field(default=None, repr=False)  # trace cases: the project's own
    params: dict = field(default_factory=dict)                     # generator choices (for repr)

    def describe(self) -> str:
        c = self.config
        pool = "unlimited" if c.num_gpu_blocks < 0 else f"N={c.num_gpu_blocks}"
        return (f"{len(self.specs)} requests, bs={c.block_size} {pool} max_num_seqs={c.max_num_seqs} "
                f"max_num_batched_tokens={c.max_num_batched_tokens} max_model_len={c.max_model_len} "
                f"chunked={c.enable_chunked_prefill} caching={c.enable_prefix_caching}"
                + (f" max_loras={c.max_loras} max_cpu_loras={c.max_cpu_loras}" if c.max_loras else "")
                + (f" -- {self.what}" if self.what else ""))

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        lines = [f"Case({self.name!r}: {self.describe()}; {self.params})"]
        for i, s in enumerate(self.specs):
            arr = f"arr={s.arrival_s:.9f}" if s.parent < 0 else f"after r{s.parent}+{s.think_s:.9f}"
            lines.append(f"  r{i}: p={len(s.prompt)} o={len(s.output)} {arr} sess={s.session} "
                         f"turn={s.turn} prompt={_runs(s.prompt)} output={_runs(s.output)}"
                         + (f" lora={s.lora}" if s.lora >= 0 else ""))
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis/IPython pretty printer
        printer.text(repr(self))

    # -- files (the command-line runner re-runs a dumped case) ------------------------------
    def to_json(self) -> str:
        cfg = asdict(self.config)
        cfg["router"] = int(cfg["router"])
        return json.dumps({"name": self.name, "what": self.what, "params": self.params, "config": cfg,
                           "specs": [asdict(s) for s in self.specs]})

    @classmethod
    def from_json(cls, text: str) -> Case:
        d = json.loads(text)
        cfg = dict(d["config"])
        cfg["router"] = Router(cfg["router"])
        return cls(name=d["name"], what=d.get("what", ""), params=d.get("params", {}),
                   config=EngineConfig(**cfg), specs=[ReqSpec(**s) for s in d["specs"]])

    def dump(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        path = folder / f"{self.name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}.json"
        path.write_text(text)
        return path


def _runs(tokens: list[int]) -> str:
    """Compact token list: runs of consecutive ids as a..b."""
    out, i = [], 0
    while i < len(tokens):
        j = i
        while j + 1 < len(tokens) and tokens[j + 1] == tokens[j] + 1:
            j += 1
        out.append(str(tokens[i]) if j == i else f"{tokens[i]}..{tokens[j]}")
        i = j + 1
    s = "[" + ",".join(out) + "]"
    return s if len(s) <= 200 else s[:200] + "...]"


def _r(a: int, n: int) -> list[int]:
    """``n`` consecutive token ids from ``a``."""
    return list(range(a, a + n))


def _cfg(**kw) -> EngineConfig:
    base = dict(num_replicas=1, block_size=16, num_gpu_blocks=-1, max_num_seqs=256,
                max_num_batched_tokens=8192, max_model_len=8192, enable_chunked_prefill=True,
                enable_prefix_caching=True, record_steps=True)
    base.update(kw)
    return EngineConfig(**base)


# ============================================================================== hand-made
def hand_made() -> dict[str, Case]:
    """Minimal cases, one per known divergence (see the README for what each shows)."""
    u = time_unit_s()  # about one short decode step
    cases = [
        Case("burst_shared_prefix", [
            ReqSpec(_r(1, 32) + _r(1001, 8), _r(5001, 4), arrival_s=0.0),
            ReqSpec(_r(1, 32) + _r(2001, 8), _r(6001, 4), arrival_s=0.0),
            ReqSpec(_r(1, 32) + _r(3001, 8), _r(7001, 4), arrival_s=0.0),
        ], _cfg(), "three requests at t=0 share a 2-block system prompt: vLLM hashes the "
                   "first request's blocks when it schedules it, so the next two hit them in "
                   "the same step"),
        Case("decode_fills_block", [
            ReqSpec(_r(1, 30), _r(5001, 6), arrival_s=0.0),
        ], _cfg(), "the 2nd sampled token completes block 1: the engine hashes it when it is "
                   "sampled, vLLM when it is scheduled (one step later)"),
        Case("last_token_block", [
            ReqSpec(_r(1, 31), [5001], arrival_s=0.0, session=0),
            ReqSpec(_r(1, 31) + [5001] + _r(6001, 8), [7001], session=0, turn=1, parent=0, think_s=0.0),
        ], _cfg(), "the only output token completes block 1 and is never fed back: vLLM never "
                   "hashes that block, the follow-up turn hits one block, not two"),
        Case("duplicates", [
            ReqSpec(_r(1, 16), [5001], arrival_s=0.0),
            ReqSpec(_r(1, 16), _r(6001, 10), arrival_s=0.0),
            ReqSpec(_r(101, 48), [7001], arrival_s=2.5 * u),
            ReqSpec(_r(1, 16) + _r(8001, 8), [9001], arrival_s=6.5 * u),
        ], _cfg(num_gpu_blocks=6), "r0 and r1 both compute the same 1-block prompt (no hit: "
                                   "a hit keeps the last token); r2 evicts r0's copy; r3 still "
                                   "hits r1's copy in vLLM, which keeps duplicates mapped"),
        Case("free_order", [
            ReqSpec(_r(1, 32), [5001], arrival_s=0.0),
            ReqSpec(_r(101, 20), [5002], arrival_s=2 * u),
            ReqSpec(_r(201, 20), [5003], arrival_s=4 * u),
            ReqSpec(_r(1, 32) + _r(301, 16), [5004], arrival_s=6 * u),
        ], _cfg(num_gpu_blocks=5), "r1 frees a full (hashed) and a partial (unhashed) block: "
                                   "vLLM puts the unhashed one at the free-queue head, so r2 "
                                   "evicts one block of r0's prompt instead of two and r3 hits"),
        Case("tight_kv_preemption", [
            ReqSpec(_r(1000 * k + 1, 20), _r(1000 * k + 501, 40), arrival_s=0.0) for k in range(4)
        ], _cfg(num_gpu_blocks=9), "four requests need 4 blocks each at the end, 8 blocks: "
                                   "decodes preempt the last running request"),
        Case("tight_kv_preemption_nocache", [
            ReqSpec(_r(1000 * k + 1, 20), _r(1000 * k + 501, 40), arrival_s=0.0) for k in range(4)
        ], _cfg(num_gpu_blocks=9, enable_prefix_caching=False), "as tight_kv_preemption, caching off"),
        Case("caching_off_counters", [
            ReqSpec(_r(1, 40), _r(5001, 3), arrival_s=0.0),
            ReqSpec(_r(1, 40), _r(6001, 3), arrival_s=0.0),
        ], _cfg(enable_prefix_caching=False), "with caching off vLLM makes no prefix-cache "
                                              "queries (KVCacheManager.record_prefix_cache_stats)"),
        Case("reserve_full_isl", [
            ReqSpec(_r(1, 40), _r(5001, 4), arrival_s=0.0),
            ReqSpec(_r(101, 40), _r(6001, 4), arrival_s=0.0),
        ], _cfg(num_gpu_blocks=6, max_num_batched_tokens=48, max_num_seqs=8),
            "r1's first 8-token chunk fits but its whole prompt (3 blocks) does not: vLLM's "
            "scheduler_reserve_full_isl keeps it waiting"),
        Case("lora_max_loras", [
            ReqSpec(_r(1, 40), _r(5001, 6), arrival_s=0.0, lora=0),
            ReqSpec(_r(101, 40), _r(5101, 2), arrival_s=0.0, lora=1),
            ReqSpec(_r(1, 40), _r(5201, 2), arrival_s=0.0, lora=0),
            ReqSpec(_r(1, 40), _r(5301, 2), arrival_s=0.0),
            ReqSpec(_r(1, 40), _r(5401, 2), arrival_s=0.0, lora=1),
            ReqSpec(_r(1, 40) + _r(9001, 8), _r(5501, 2), arrival_s=9 * u, lora=1),
        ], _cfg(max_loras=1, max_cpu_loras=2), "max_loras = 1: r1 and r4 (adapter 1) are skipped while "
                                               "adapter 0 runs and stay waiting in order; r2 hits r0's "
                                               "blocks (same adapter), r3 (no adapter) and r4 (adapter 1) "
                                               "do not; r5 hits r4's"),
        Case("lora_preemption", [
            ReqSpec(_r(1000 * k + 1, 20), _r(1000 * k + 501, 30), arrival_s=0.0, lora=k % 3) for k in range(5)
        ], _cfg(num_gpu_blocks=10, max_loras=2, max_cpu_loras=3),
            "tight KV with three adapters, two per batch: preempted requests go back to the head of "
            "the waiting queue, ahead of the skipped ones"),
    ]
    out = {c.name: c for c in cases}
    # The project's hand-worked engine cases that are valid vLLM configurations.
    for name, sc in hand_cases().items():
        c = sc.config
        if c.num_replicas != 1 or c.max_num_batched_tokens < c.max_num_seqs:
            continue
        if not c.enable_chunked_prefill and c.max_num_batched_tokens < c.max_model_len:
            continue
        out[f"project_{name}"] = Case(f"project_{name}", list(sc.specs), replace(c, record_steps=True),
                                      "tests/engine_cases.hand_cases()")
    return out


# ============================================================================== traces
def specs_from_workload(wl) -> list[ReqSpec]:
    """Token lists for a project ``Workload``: token ``(key, j)`` of a content segment gets
    the id ``index(key) * 2**31 + j`` (``index``: order of first appearance)."""
    index: dict[int, int] = {}
    specs = []
    off = wl.seg_offsets
    for i in range(len(wl)):
        toks: list[int] = []
        for k in range(int(off[i]), int(off[i + 1])):
            base = index.setdefault(int(wl.seg_key[k]), len(index)) << 31
            toks.extend(range(base, base + int(wl.seg_len[k])))
        p = int(wl.prompt_tokens[i])
        par = int(wl.parent[i])
        specs.append(ReqSpec(prompt=toks[:p], output=toks[p:],
                             arrival_s=float(wl.arrival_s[i]) if par < 0 else math.nan,
                             session=int(wl.session[i]), turn=int(wl.turn[i]), parent=par,
                             think_s=float(wl.think_s[i])))
    return specs


def case_from_workload(name: str, wl, config: EngineConfig, what: str) -> Case:
    """A case whose EngineInputs come from the project's path (as ``oracle.api.engine_inputs``)."""
    from engine_cases import cost_model

    from oracle.engine.hashes import shared_block_hashes
    wl.validate()
    if config.enable_prefix_caching:
        hash_offsets, hashes = shared_block_hashes(wl, config.block_size)
    else:
        hash_offsets, hashes = np.zeros(len(wl), np.int64), np.zeros(0, np.uint64)
    inputs = EngineInputs(config=config, arrival_s=wl.arrival_s, prompt_tokens=wl.prompt_tokens,
                          output_tokens=wl.output_tokens, session=wl.session, turn=wl.turn,
                          parent=wl.parent, think_s=wl.think_s, hash_offsets=hash_offsets,
                          hashes=hashes, cost_params=np.asarray(cost_model()[0], np.float64))
    return Case(name, specs_from_workload(wl), config, what, inputs=inputs)


def _pool_for(wl, bs: int, fraction: float) -> int:
    """N (with the null block) holding ``fraction`` of all requests' blocks, at least the largest."""
    need = (wl.total_tokens() + bs - 1) // bs
    return int(max(need.max(), math.ceil(need.sum() * fraction))) + 1


def write_token_ids_trace(path: Path, n: int = 40, seed: int = 0) -> Path:
    """A small token-id JSONL trace (the format has no bundled sample): shared system prompts,
    repeated questions, arrival_time_s."""
    rng = random.Random(seed)
    systems = [[rng.randrange(1, 32000) for _ in range(rng.randrange(20, 90))] for _ in range(3)]
    questions: list[list[int]] = []
    t = 0.0
    lines = []
    for _ in range(n):
        t += rng.expovariate(1 / 0.01)
        if questions and rng.random() < 0.2:
            q = rng.choice(questions)
        else:
            q = [rng.randrange(1, 32000) for _ in range(rng.randrange(1, 60))]
            questions.append(q)
        prompt = rng.choice(systems) + q
        out = [rng.randrange(1, 32000) for _ in range(rng.randrange(1, 40))]
        lines.append(json.dumps({"arrival_time_s": round(t, 6), "input_tok_ids": prompt,
                                 "output_tok_ids": out}))
    path.write_text("\n".join(lines) + "\n")
    return path


TRACE_CASES = ("trace_mooncake", "trace_azure", "trace_azure_nocache", "trace_token_ids",
               "trace_parquet_chat", "trace_parquet_chat_nocache")


def trace_case(name: str, tmp_dir: str | Path) -> Case:
    """One of :data:`TRACE_CASES`: the first requests of a bundled sample, read by the
    project's trace importers (``oracle.workload.traces``)."""
    from oracle.workload.traces import apply_trace_options, read_trace
    tmp_dir = Path(tmp_dir)
    if name == "trace_mooncake":
        wl = apply_trace_options(read_trace(SCENARIO_DATA / "mooncake_synthetic_trace.jsonl"), limit=30)
        cfg = _cfg(block_size=16, max_model_len=131072, num_gpu_blocks=_pool_for(wl, 16, 0.3))
        return case_from_workload(name, wl, cfg, "Mooncake JSONL (hash_ids of 512-token blocks), first 30")
    if name in ("trace_azure", "trace_azure_nocache"):
        wl = apply_trace_options(read_trace(SCENARIO_DATA / "azure_conv_head3000.csv"), limit=40,
                                 time_scale=0.02)
        caching = name == "trace_azure"
        cfg = _cfg(block_size=32, max_model_len=16384, num_gpu_blocks=_pool_for(wl, 32, 0.25),
                   max_num_batched_tokens=1024, enable_prefix_caching=caching)
        return case_from_workload(name, wl, cfg, "Azure conversation CSV, first 40, time x0.02")
    if name == "trace_token_ids":
        path = write_token_ids_trace(tmp_dir / "token_ids.jsonl")
        wl = read_trace(path)
        cfg = _cfg(block_size=16, num_gpu_blocks=_pool_for(wl, 16, 0.3), max_num_seqs=8,
                   max_num_batched_tokens=256)
        return case_from_workload(name, wl, cfg, "token-id JSONL (written here: no bundled sample)")
    if name in ("trace_parquet_chat", "trace_parquet_chat_nocache"):
        from oracle.api import as_scenario
        from oracle.workload import build_workload
        sc = as_scenario(ROOT / "scenarios" / "chat_prefix_cache.toml")
        gen = build_workload(sc.workload, duration_s=None, num_requests=40, seed=sc.seed)
        path = tmp_dir / "chat.parquet"
        gen.to_parquet(path)
        wl = apply_trace_options(read_trace(path), time_scale=0.01)
        caching = name == "trace_parquet_chat"
        cfg = _cfg(block_size=16, max_model_len=32768, num_gpu_blocks=_pool_for(wl, 16, 0.2),
                   max_num_batched_tokens=2048, enable_prefix_caching=caching)
        return case_from_workload(name, wl, cfg, "Parquet workload (chat_prefix_cache.toml generator: "
                                                 "multi-turn, shared system prompts), 40 requests")
    raise KeyError(f"unknown trace case {name!r}; known: {', '.join(TRACE_CASES)}")


# ============================================================================== generated
THEMES = ("burst", "chat", "tight_kv", "long_prompts", "few_seqs", "timeouts", "lora", "mixed")
#: Themes compared with async scheduling: every one but client timeouts (an abort received
#: while a step runs reaches vLLM's AsyncScheduler after it has scheduled the next step, the
#: engine before: oracle/engine/README.md "Async scheduling").
ASYNC_THEMES = tuple(t for t in THEMES if t != "timeouts")


def as_async(case: Case) -> Case:
    """The case with ``async_scheduling`` on and no client timeouts (see ``ASYNC_THEMES``)."""
    specs = [replace(s, timeout_s=math.inf) if math.isfinite(getattr(s, "timeout_s", math.inf)) else s
             for s in case.specs]
    return replace(case, name=case.name + "+async", specs=specs,
                   config=replace(case.config, async_scheduling=True))


def _toks(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, 32000) for _ in range(n)]


@st.composite
def workloads(draw, theme: str = "mixed") -> Case:
    """A random single-replica workload. Themes (``mixed`` draws one of the others and then
    varies everything):

    * ``burst``: many requests at one instant (or a few), often sharing system prompts and
      sometimes identical prompts;
    * ``chat``: multi-turn sessions whose follow-ups carry the whole history;
    * ``tight_kv``: a pool barely larger than the biggest request: eviction, preemption;
    * ``long_prompts``: prompts many times the token budget (chunked prefill);
    * ``few_seqs``: ``max_num_seqs`` of 1-3;
    * ``timeouts``: a burst on a tight pool whose clients give up after a few steps (aborts
      of waiting, running and preempted requests; ``mixed`` adds them now and then too);
    * ``lora``: a burst whose sessions and lone requests name one of 1-5 LoRA adapters (or
      none), ``max_loras`` of 1-3 (vLLM's scheduled_loras rule, per-adapter block hashes).

    Block sizes 16-128, prefix caching on and off, chunked prefill on and off (where the
    theme allows), arrivals on a grid of one short decode step.
    """
    base = theme
    if theme == "mixed":
        base = draw(st.sampled_from(THEMES[:-1]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    u = time_unit_s()
    bs = draw(st.sampled_from([16, 16, 32, 64, 128]) | st.integers(16, 128))
    caching = draw(st.booleans())
    chunked = True if base == "long_prompts" else draw(st.sampled_from([True, True, False]))
    big = bs * draw(st.integers(1, 4))   # typical prompt scale

    systems = [_toks(rng, draw(st.integers(1, 3 * bs))) for _ in range(draw(st.integers(0, 3)))]
    if base in ("burst", "timeouts", "lora"):
        horizon = draw(st.sampled_from([0, 0, 2, 8]))
    elif base == "chat":
        horizon = draw(st.sampled_from([0, 10, 60]))
    else:
        horizon = draw(st.sampled_from([0, 4, 30, 120]))
    max_out = draw(st.sampled_from([4, 16, 48]))
    num_roots = draw(st.integers(1, 16 if base != "chat" else 8))
    specs: list[ReqSpec] = []
    session = 0
    for _ in range(num_roots):
        sys_idx = draw(st.integers(-1, len(systems) - 1))
        prefix = systems[sys_idx] if sys_idx >= 0 else []
        if base == "long_prompts":
            n_user = draw(st.integers(1, 8 * big))
        else:
            n_user = draw(st.integers(0 if prefix else 1, big + bs))
        roots = [s for s in specs if s.parent < 0]
        if roots and draw(st.integers(0, 4)) == 0:   # an identical prompt (benchmarks repeat)
            prompt = list(draw(st.sampled_from(roots)).prompt)
        else:
            prompt = prefix + _toks(rng, n_user)
        out_len = draw(st.integers(1, max_out))
        out = _toks(rng, out_len)
        if draw(st.integers(0, 5)) == 0 and roots:   # same prompt and output as another: duplicate blocks
            other = draw(st.sampled_from(roots))
            prompt, out = list(other.prompt), list(other.output)
        turns = draw(st.integers(1, 4)) if base == "chat" else (draw(st.sampled_from([1, 1, 1, 2, 3])))
        root = ReqSpec(prompt, out, arrival_s=draw(st.integers(0, horizon)) * u,
                       session=session if turns > 1 else -1)
        specs.append(root)
        parent = len(specs) - 1
        for turn in range(1, turns):
            par = specs[parent]
            child = ReqSpec(par.tokens + _toks(rng, draw(st.integers(1, 2 * bs))),
                            _toks(rng, draw(st.integers(1, max_out))), arrival_s=math.nan,
                            session=session, turn=turn, parent=parent,
                            think_s=draw(st.sampled_from([0, 0, 1, 3, 20])) * u)
            specs.append(child)
            parent = len(specs) - 1
        if turns > 1:
            session += 1

    totals = [len(s.prompt) + len(s.output) for s in specs]
    max_model_len = max(totals) + draw(st.integers(0, 2 * bs))
    if chunked:
        if base == "long_prompts":
            budget = draw(st.integers(max(1, bs // 2), 3 * bs))
        else:
            budget = draw(st.sampled_from([8192, 2048]) | st.integers(16, 4 * bs))
    else:
        budget = max_model_len + draw(st.integers(0, 64))
    if base == "few_seqs":
        max_num_seqs = draw(st.integers(1, 3))
    else:
        max_num_seqs = draw(st.sampled_from([256, 256, 16, 8, 4, 2]))
    max_num_seqs = max(1, min(max_num_seqs, budget))   # vLLM: max_num_batched_tokens >= max_num_seqs

    if base == "timeouts" or (theme == "mixed" and draw(st.integers(0, 3)) == 0):
        patience = [math.inf, 0.5, 1, 2, 5, 12, 40]
        specs = [replace(s, timeout_s=draw(st.sampled_from(patience)) * u) for s in specs]
    lora_kw = {}
    if base == "lora":
        adapters, by_session = draw(st.integers(1, 5)), {}
        for k, s in enumerate(specs):
            a = by_session.get(s.session) if s.session >= 0 else None
            if a is None:
                a = draw(st.integers(-1, adapters - 1))
                if s.session >= 0:
                    by_session[s.session] = a
            specs[k] = replace(s, lora=a)
        m = draw(st.integers(1, 3))
        lora_kw = {"max_loras": m, "max_cpu_loras": m + draw(st.integers(0, 2))}
    need_max = max(cdiv(t, bs) for t in totals)
    if base in ("tight_kv", "timeouts"):
        pool = "tight"
    else:
        pool = draw(st.sampled_from(["unlimited", "loose", "tight"]))
    if pool == "unlimited":
        num_gpu_blocks = -1
    elif pool == "loose":
        num_gpu_blocks = need_max * draw(st.integers(2, 5)) + 1
    else:
        num_gpu_blocks = need_max + draw(st.integers(0, 3)) + 1
    config = _cfg(block_size=bs, num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs,
                  max_num_batched_tokens=budget, max_model_len=max_model_len,
                  enable_chunked_prefill=chunked, enable_prefix_caching=caching, **lora_kw)
    return Case(f"gen_{base}", specs, config, params={"theme": base, "pool": pool})
