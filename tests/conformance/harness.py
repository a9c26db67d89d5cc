"""Run one workload through vLLM's scheduler, the jitted engine and the reference engine,
and compare them (see ``tests/conformance/README.md``).

    from conformance.harness import run_vllm, run_oracle, run_reference, compare
    from conformance.workloads import hand_made
    case = hand_made()["burst_shared_prefix"]
    v, o = run_vllm(case), run_oracle(case)
    print(compare(v, o) or "same")

    run_vllm(specs, config)     # also: engine_cases.ReqSpec rows + an EngineConfig

A :class:`~conformance.workloads.Case` carries token lists (``engine_cases.ReqSpec``), an
``EngineConfig`` (one replica) and, for traces, the project's own ``EngineInputs``. All
three sides price steps with the same cost function (``engine_cases.cost_model()``: the
roofline kernel ``oracle.kernels.cost.step_time_s`` with Llama-3.1-8B on an H100).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # `import engine_cases`, `import reference` (as tests/conftest.py does)
    sys.path.insert(0, str(_TESTS))

import numpy as np  # noqa: E402
from engine_cases import build_inputs, cost_model  # noqa: E402

from oracle.engine.inputs import EngineInputs, EngineOutputs  # noqa: E402

from .trace import KINDS, PREEMPTED_COUNTERS, ReqRow, StepRow, Trace, classify, compare  # noqa: E402

__all__ = ["check", "compare", "engine_inputs", "run_oracle", "run_reference", "run_vllm",
           "step_time_fn"]


def as_case(case_or_specs, config=None):
    """A ``Case`` as is, or ``(specs, config)`` wrapped into one."""
    if config is None:
        return case_or_specs
    from .workloads import Case
    return Case("adhoc", list(case_or_specs), config)


def engine_inputs(case) -> EngineInputs:
    """The case's EngineInputs (its own for trace cases, else built from the token lists),
    with ``record_steps`` on and the shared cost parameters."""
    cfg = replace(case.config, record_steps=True)
    if case.inputs is not None:
        return replace(case.inputs, config=cfg, cost_params=np.asarray(cost_model()[0], np.float64))
    inputs = build_inputs(case.specs, cfg, cost_model()[0])
    if inputs.lora_params is not None:   # LoRA loads and kernels are the worker's: vLLM's scheduler prices none
        inputs.lora_params = np.zeros_like(inputs.lora_params)
    return inputs


def step_time_fn(inputs: EngineInputs):
    """``step_time_fn(num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units,
    prefill_ctx_sum) -> seconds`` with the numbers the jitted engine uses."""
    _, fn, _ = cost_model()
    params = inputs.cost_params
    return lambda *args: float(fn(params, *args))


# ----------------------------------------------------------------------------- sides
def run_vllm(case, config=None, **scheduler_overrides) -> Trace:
    """vLLM's v1 scheduler over the case (see ``vllm_driver``); ``scheduler_overrides`` set
    ``SchedulerConfig`` fields (e.g. ``scheduler_reserve_full_isl=False``)."""
    from . import vllm_driver  # imported here: vLLM is optional
    case = as_case(case, config)
    inputs = engine_inputs(case)
    return vllm_driver.run_vllm(case.specs, inputs.config, step_time_fn(inputs),
                                inputs.resolved_num_gpu_blocks(), **scheduler_overrides)


def run_oracle(case, config=None) -> Trace:
    """The jitted engine (``oracle.engine.loop.run_engine``)."""
    from oracle.engine.loop import run_engine
    case = as_case(case, config)
    inputs = engine_inputs(case)
    return _from_outputs("oracle", inputs, run_engine(inputs))


def run_reference(case, config=None) -> Trace:
    """The plain-Python reference (``tests/reference/engine.py``), with per-step detail."""
    case = as_case(case, config)
    inputs = _csr_hashes(engine_inputs(case))
    eng = _detail_reference_engine()(inputs, step_time_fn(inputs))
    out = eng.run()
    trace = _from_outputs("reference", inputs, out)
    if len(eng.conf_details) == len(trace.steps):
        for row, (sched, pre) in zip(trace.steps, eng.conf_details):
            row.sched, row.preempted = sched, pre
    else:
        trace.notes.append("per-step detail unavailable (reference engine internals changed)")
    return trace


def _csr_hashes(inputs: EngineInputs) -> EngineInputs:
    """The reference reads CSR hash offsets (n + 1); the project's workload path may give
    start offsets (n, chains sharing storage, ``oracle.engine.hashes``): same values."""
    n = len(inputs)
    off = np.asarray(inputs.hash_offsets, np.int64)
    if off.shape[0] == n + 1:
        return inputs
    if not inputs.config.enable_prefix_caching:
        return replace(inputs, hash_offsets=np.zeros(n + 1, np.int64), hashes=np.zeros(0, np.uint64))
    bs = int(inputs.config.block_size)
    counts = (inputs.prompt_tokens.astype(np.int64) + inputs.output_tokens) // bs
    csr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=csr[1:])
    hashes = np.concatenate([inputs.hashes[off[i]:off[i] + counts[i]] for i in range(n)]) if n else inputs.hashes
    return replace(inputs, hash_offsets=csr, hashes=np.asarray(hashes, np.uint64))


def _from_outputs(source: str, inputs: EngineInputs, out: EngineOutputs) -> Trace:
    n = len(inputs)
    reqs = [ReqRow(status=int(out.status[i]), admitted_s=float(out.admitted_s[i]),
                   first_token_s=float(out.first_token_s[i]), completion_s=float(out.completion_s[i]),
                   cached_tokens=int(out.cached_tokens[i]), computed_tokens=int(out.computed_tokens[i]),
                   preemptions=int(out.preemptions[i])) for i in range(n)]
    steps = []
    st = out.steps or {}
    for k in range(len(st.get("start_s", ()))):
        nd, npf = int(st["num_decode"][k]), int(st["num_prefill_tokens"][k])
        steps.append(StepRow(start_s=float(st["start_s"][k]), duration_s=float(st["duration_s"][k]),
                             num_scheduled=nd + npf, num_decode=nd, num_prefill_tokens=npf,
                             num_running=int(st["num_running"][k]), num_waiting=int(st["num_waiting"][k]),
                             kv_blocks_used=int(st["kv_blocks_used"][k]),
                             kv_blocks_cached=int(st["kv_blocks_cached"][k])))
    counters = {"queries": int(out.prefix_cache_queries), "hits": int(out.prefix_cache_hits)}
    for k in PREEMPTED_COUNTERS:  # reported only once the engine has them
        for name in (f"prefix_cache_{k}", k, k.replace("preempted_", "preempted_prefix_cache_")):
            if getattr(out, name, None) is not None:
                counters[k] = int(getattr(out, name))
                break
    return Trace(source=source, num_gpu_blocks=inputs.resolved_num_gpu_blocks(), requests=reqs,
                 steps=steps, counters=counters)


_DETAIL_CLS = None


def _detail_reference_engine():
    """``ReferenceEngine`` that also records, per recorded step, what it scheduled
    (request, tokens, computed before) and whom it preempted. Hooks ``_step``,
    ``_preempt`` and ``_finish_scheduled``; if those change, the detail is simply absent."""
    global _DETAIL_CLS
    if _DETAIL_CLS is not None:
        return _DETAIL_CLS
    from reference.engine import ReferenceEngine

    class DetailReferenceEngine(ReferenceEngine):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.conf_details: list = []
            self._conf_sched: list = []
            self._conf_pre: list = []

        def _step(self, rep, t):
            self._conf_sched, self._conf_pre = [], []
            before = len(self.step_rows)
            super()._step(rep, t)
            if len(self.step_rows) > before:
                self.conf_details.append((tuple(self._conf_sched), tuple(sorted(self._conf_pre))))

        def _preempt(self, rep, victim):
            self._conf_pre.append(victim.rid)
            return super()._preempt(rep, victim)

        def _finish_scheduled(self, rep, s, t_end):
            self._conf_sched.append((s.req.rid, s.num_new, s.p0))
            return super()._finish_scheduled(rep, s, t_end)

    _DETAIL_CLS = DetailReferenceEngine
    return _DETAIL_CLS


# ----------------------------------------------------------------------------- all at once
RUNNERS = {"oracle": run_oracle, "reference": run_reference}


def check(case, sides=("oracle", "reference")) -> tuple[str | None, str | None]:
    """Run vLLM once and every side in ``sides``. Returns ``(report, kind)``: ``(None, None)``
    if all agree with vLLM, else one report (a side that differs from vLLM exactly like the
    previous one is only named) and the most telling kind of difference
    (``conformance.trace.classify``)."""
    v = run_vllm(case)
    reports, kinds, prev = [], [], None
    for side in sides:
        t = RUNNERS[side](case)
        diff = compare(v, t)
        if diff is None:
            continue
        kinds.append(classify(v, t))
        if prev is not None and compare(prev, t) is None:
            reports.append(f"{t.source}: the same differences ({t.source} and {prev.source} agree)")
        else:
            reports.append(diff)
        prev = t
    if not reports:
        return None, None
    kind = min(kinds, key=KINDS.index)
    return f"workload {case.name}: {case.describe()}\n\n" + "\n\n".join(reports), kind
