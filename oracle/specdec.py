"""Speculative decoding as a scenario sees it: the ``speculative`` key of a ``[[frameworks]]``
entry, the vLLM settings it implies, the acceptance model and the drafter's cost parameters.

The engine side is ``oracle/engine/specdec.py`` (semantics: ``oracle/engine/README.md``,
"Speculative decoding").
"""

from __future__ import annotations

import numpy as np

from oracle.kernels.cost import PARAM_NAMES

_IDX = {name: i for i, name in enumerate(PARAM_NAMES)}


def _without_cpu(params: np.ndarray) -> np.ndarray:
    """A copy of ``params`` without CPU terms (the step's CPU time is the target's)."""
    out = np.array(params, np.float64, copy=True)
    for name in ("step_overhead_s", "cpu_seq_s", "cpu_overlap"):
        out[_IDX[name]] = 0.0
    return out


def draft_head_params(target_params: np.ndarray) -> np.ndarray:
    """Cost parameters of an EAGLE / EAGLE-3 / MTP draft head: one decoder layer of the
    target (EAGLE: "a single transformer decoder layer", Li et al. 2024, arXiv:2401.15077;
    DeepSeek-V3's MTP module: one Transformer block sharing the output head, arXiv:2412.19437
    §2.2) and the target's LM head, on the target's GPUs; no pipeline hand-offs, no CPU terms."""
    out = _without_cpu(target_params)
    num_layers = out[_IDX["num_layers"]]
    out[_IDX["allreduce_calls"]] = out[_IDX["allreduce_calls"]] / num_layers if num_layers else 0.0
    out[_IDX["num_layers"]] = 1.0
    out[_IDX["pp_handoffs"]] = 0.0
    return out
