"""Where the data-driven tests read real data.

Two layers, selected with :data:`SOURCES`:

* ``bundled``: small attributed cuts of the real files in ``tests/data/samples/``, made by
  ``tests/data/make_samples.py`` (``tests/data/README.md`` says what each keeps and its licence).
  Always present, so every test runs from a plain clone.
* ``shared``: the full files in ``../shared/data`` next to the checkout. Tests (or parameter
  sets) marked ``shared_data`` read them; when the folder is absent conftest deselects them and
  says so at the end of the run.

Both layers have the same layout (``calibration/vidur/...``, ``traces/<same file names>``), so
a test takes ``root(source)`` and looks up the facts it expects of that source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TESTS_DATA = TESTS / "data"
SAMPLES = TESTS_DATA / "samples"

_ROOTS = {"bundled": SAMPLES, "shared": SHARED_DATA}

#: parametrize a test over both layers: ``@pytest.mark.parametrize("source", SOURCES)``
SOURCES = [pytest.param("bundled", id="bundled"),
           pytest.param("shared", id="shared", marks=pytest.mark.shared_data)]


def root(source: str) -> Path:
    """The data folder of a layer (``bundled`` or ``shared``)."""
    return _ROOTS[source]


def have_shared() -> bool:
    return SHARED_DATA.is_dir()


#: What the tests know of each trace file in each layer: request count ``n``, last arrival
#: ``last_s`` (seconds after the first), largest prompt ``max_prompt``. The bundled figures
#: are of the cuts made by tests/data/make_samples.py; the shared ones of the full files.
TRACE_FACTS = {
    "bundled": {
        "synthetic_trace.jsonl": {"n": 339, "last_s": 1004.943},
        "sharegpt-qwen3-32b-300-sps10.jsonl": {"n": 12, "last_s": (28330075320 - 587870262) * 1e-9},
        "AzureLLMInferenceTrace_conv.csv": {"n": 600},
        "AzureLLMInferenceTrace_code.csv": {"n": 400, "max_prompt": 7436},
    },
    "shared": {
        "synthetic_trace.jsonl": {"n": 3993, "last_s": 1022.025},
        "sharegpt-qwen3-32b-300-sps10.jsonl": {"n": 300, "last_s": (29183763203 - 46926808) * 1e-9},
        "AzureLLMInferenceTrace_conv.csv": {"n": 19366},
        "AzureLLMInferenceTrace_code.csv": {"n": 8819, "max_prompt": 7437},
    },
}


def trace_file(source: str, name: str) -> tuple[Path, dict]:
    """(path, facts) of one trace file of a layer."""
    return root(source) / "traces" / name, TRACE_FACTS[source][name]
