"""The bundled data samples (tests/data/samples): small, and exact cuts of the shared files.

tests/data/README.md says where each sample comes from, how it is cut and its licence.
"""

from __future__ import annotations

import importlib.util
import re

from data_sources import SAMPLES, TESTS_DATA

MAX_FILE_BYTES = 128 * 1024
MAX_TOTAL_BYTES = 640 * 1024


def _make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", TESTS_DATA / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bundled() -> dict[str, bytes]:
    return {p.relative_to(SAMPLES).as_posix(): p.read_bytes() for p in sorted(SAMPLES.rglob("*")) if p.is_file()}


def test_samples_are_small_and_attributed():
    files = _bundled()
    assert files, "tests/data/samples is empty"
    sizes = {name: len(data) for name, data in files.items()}
    assert max(sizes.values()) <= MAX_FILE_BYTES, sizes
    assert sum(sizes.values()) <= MAX_TOTAL_BYTES, sum(sizes.values())
    readme = (TESTS_DATA / "README.md").read_text()
    for name in files:   # each file is described (the per-model profiles of calibration/ by one row)
        generic = re.sub(r"^calibration/vidur/[^/]+/[^/]+/[^/]+/mlp\.csv$",
                         "calibration/vidur/<device>/<org>/<model>/mlp.csv", name)
        assert f"`{name}`" in readme or f"`{generic}`" in readme, name


def test_samples_are_exact_cuts_of_the_shared_files(shared_data):
    want = {rel.as_posix(): text.encode() for rel, text in _make_samples().samples(shared_data).items()}
    got = _bundled()
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs from its cut: rerun python tests/data/make_samples.py"
