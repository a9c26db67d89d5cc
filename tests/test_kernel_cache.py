"""The on-disk kernel cache is keyed on the whole package (issue #18): editing a callee or a
module-level constant in another file than the cached kernel's is seen without clearing
anything, and an unchanged package reuses the cache.

The end-to-end tests run a small cross-file call chain in subprocesses, on a copy of the
package: a kernel in ``oracle/engine/_probe.py`` that calls the real
``oracle.kernels.cost.step_time_s`` and reads the constant ``oracle.kernels.kvcache.AHEAD``
(defined in ``oracle/kernels/blockpool.py``, two files away).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numba
import pytest

from oracle.kernels import _jit
from oracle.kernels._jit import KEEP, PACKAGE_ROOT, fingerprint, source_files

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="JIT disabled")

PROBE = '''
from oracle.kernels._jit import jit
from oracle.kernels.cost import step_time_s
from oracle.kernels.kvcache import AHEAD


@jit
def probe(params):
    return step_time_s(params, 100, 10, 10, 5000.0, 4000.0, 64.0), AHEAD
'''

RUN = '''
import json
from oracle.cost import build_cost_params
from oracle.engine._probe import probe
from oracle.kernels import _jit
t, ahead = probe(build_cost_params("llama-3.1-8b", "h100-sxm"))
print(json.dumps({"t": t, "ahead": ahead, "hits": sum(probe.stats.cache_hits.values()),
                  "misses": sum(probe.stats.cache_misses.values()), "cache_dir": _jit.CACHE_DIR,
                  "fingerprint": _jit.FINGERPRINT}))
'''


def _copy_package(dst: Path) -> Path:
    pkg = dst / "oracle"
    shutil.copytree(PACKAGE_ROOT, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    (pkg / "engine" / "_probe.py").write_text(PROBE)
    return pkg


def _run(root: Path, **env_extra: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "ORACLE_CACHE_DIR", "XDG_CACHE_HOME", "NUMBA_DISABLE_JIT")}
    env.update({"PYTHONPATH": str(root), "ORACLE_NUMBA_CACHE": "1", "XDG_CACHE_HOME": str(root / "xdg"), **env_extra})
    p = subprocess.run([sys.executable, "-c", RUN], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def _files(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_edits_in_other_files_are_seen_without_clearing_the_cache(tmp_path):
    pkg = _copy_package(tmp_path)
    base = tmp_path / "xdg" / "llmperforacle" / "numba"

    first, _ = _run(tmp_path)
    assert first["misses"] > 0 and first["hits"] == 0 and first["ahead"] == 8
    assert Path(first["cache_dir"]) == base / f"oracle-{first['fingerprint']}"
    assert (Path(first["cache_dir"]) / "engine").is_dir() and (Path(first["cache_dir"]) / "kernels").is_dir()
    filled = _files(base)
    assert any(f.endswith(".nbi") for f in filled) and any(f.endswith(".nbc") for f in filled)

    # unchanged package: loaded from the cache, nothing compiled, no new files
    again, _ = _run(tmp_path)
    assert again == {**first, "hits": again["hits"], "misses": 0} and again["hits"] > 0
    assert _files(base) == filled

    # a callee in another file (kernels/cost.py, not engine/_probe.py) changes
    _edit(pkg / "kernels" / "cost.py", "    return total\n", "    return 2.0 * total\n")
    doubled, _ = _run(tmp_path)
    assert doubled["t"] == 2.0 * first["t"]
    assert doubled["misses"] > 0 and doubled["fingerprint"] != first["fingerprint"]
    assert Path(first["cache_dir"]).is_dir()   # the old state's folder is left alone (it is recent)

    # a module-level constant in another file changes
    _edit(pkg / "kernels" / "blockpool.py", "\nAHEAD = 8\n", "\nAHEAD = 5\n")
    const, _ = _run(tmp_path)
    assert const["ahead"] == 5 and const["t"] == doubled["t"] and const["misses"] > 0

    # undoing both edits finds the first state's kernels again
    _edit(pkg / "kernels" / "cost.py", "    return 2.0 * total\n", "    return total\n")
    _edit(pkg / "kernels" / "blockpool.py", "\nAHEAD = 5\n", "\nAHEAD = 8\n")
    back, _ = _run(tmp_path)
    assert back["fingerprint"] == first["fingerprint"] and back["t"] == first["t"]
    assert back["misses"] == 0 and back["hits"] > 0


def test_numba_cache_dir_off_switch_and_unwritable_folder(tmp_path):
    _copy_package(tmp_path)
    # NUMBA_CACHE_DIR wins (sweep workers get one); the fingerprint folder goes inside it
    res, _ = _run(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "ncd"))
    assert Path(res["cache_dir"]) == tmp_path / "ncd" / f"oracle-{res['fingerprint']}"
    assert any(f.endswith(".nbc") for f in _files(tmp_path / "ncd"))
    assert not (tmp_path / "xdg").exists()
    # ORACLE_NUMBA_CACHE=0: nothing written anywhere
    off, _ = _run(tmp_path, ORACLE_NUMBA_CACHE="0", NUMBA_CACHE_DIR=str(tmp_path / "off"))
    assert off["cache_dir"] is None and off["t"] == res["t"] and off["hits"] == 0
    assert not (tmp_path / "off").exists()
    # a folder that cannot be created: compiles, warns, does not crash
    (tmp_path / "a_file").write_text("")
    bad, err = _run(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "a_file" / "numba"))
    assert bad["cache_dir"] is None and bad["t"] == res["t"] and bad["misses"] > 0
    assert "cannot write the kernel cache folder" in err


def test_fingerprint_changes_with_every_source_file(tmp_path):
    pkg = tmp_path / "oracle"
    shutil.copytree(PACKAGE_ROOT, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    files = source_files(str(pkg))
    assert files == source_files() and "kernels/cost.py" in files and "engine/loop.py" in files
    versions = ("v",)
    base = fingerprint(str(pkg), versions)
    assert base == fingerprint(PACKAGE_ROOT, versions)   # the location does not matter, the content does
    seen = {base}
    for rel in files:
        p = pkg / rel
        text = p.read_bytes()
        p.write_bytes(text + b"\n")
        fp = fingerprint(str(pkg), versions)
        assert fp not in seen, rel
        seen.add(fp)
        p.write_bytes(text)
    assert fingerprint(str(pkg), versions) == base
    assert fingerprint(str(pkg), ("w",)) != base   # numba / numpy / Python / package version
    # a new source file, a renamed one, count; caches and data files do not
    (pkg / "kernels" / "new.py").write_text("")
    assert fingerprint(str(pkg), versions) not in seen
    (pkg / "kernels" / "new.py").unlink()
    (pkg / "engine" / "__pycache__").mkdir(exist_ok=True)
    (pkg / "engine" / "__pycache__" / "x.py").write_text("x = 1")
    (pkg / "engine" / "x.nbi").write_bytes(b"x")
    assert fingerprint(str(pkg), versions) == base
    os.rename(pkg / "kernels" / "segments.py", pkg / "kernels" / "segments2.py")
    assert fingerprint(str(pkg), versions) not in seen
    assert fingerprint(str(tmp_path / "nothing"), versions) is None


def test_kernels_are_cached_in_the_fingerprint_folder():
    from oracle.kernels.cost import step_time_s
    if _jit.CACHE_DIR is None:
        pytest.skip("kernel cache off in this process")
    assert os.path.basename(_jit.CACHE_DIR) == f"oracle-{_jit.FINGERPRINT}"
    assert _jit.FINGERPRINT == fingerprint()
    assert step_time_s._cache.cache_path == os.path.join(_jit.CACHE_DIR, "kernels")


def test_base_dir(monkeypatch, tmp_path):
    for var in ("NUMBA_CACHE_DIR", "ORACLE_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _jit.base_dir() == str(tmp_path / "home" / ".cache" / "llmperforacle" / "numba")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _jit.base_dir() == str(tmp_path / "xdg" / "llmperforacle" / "numba")
    monkeypatch.setenv("ORACLE_CACHE_DIR", str(tmp_path / "oc"))
    assert _jit.base_dir() == str(tmp_path / "oc" / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "ncd"))
    assert _jit.base_dir() == str(tmp_path / "ncd")


def test_prune_keeps_recent_and_current_folders(tmp_path):
    now = time.time()
    names = [f"oracle-{i:024x}" for i in range(KEEP + 6)]

    def make(ages):
        for name, age in zip(names, ages):
            (tmp_path / name / "engine").mkdir(parents=True, exist_ok=True)
            os.utime(tmp_path / name, (now - age, now - age))

    (tmp_path / "other").mkdir()   # not an oracle-<fingerprint> folder: never touched
    # all used within the hour: nothing is deleted, however many there are
    make([60.0 * (i + 1) for i in range(len(names))])
    _jit._prune(str(tmp_path), str(tmp_path / names[-1]))
    assert {p.name for p in tmp_path.iterdir()} == {*names, "other"}
    # names[i] last used i+1 days ago, except the last one (10 s ago); the current one is the
    # second oldest and stays; of the others, the KEEP most recently used stay
    make([10.0 if i == KEEP + 5 else 86400.0 * (i + 1) for i in range(len(names))])
    current = names[KEEP + 4]
    _jit._prune(str(tmp_path), str(tmp_path / current))
    assert {p.name for p in tmp_path.iterdir()} == {names[KEEP + 5], *names[:KEEP - 1], current, "other"}
