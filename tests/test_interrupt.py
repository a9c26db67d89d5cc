"""Interrupting a run never loses earlier results or leaves partial files (issue #8).

* Real processes: `oracle simulate` and `oracle sweep` run once to completion, then again into
  the same ``--out`` and get SIGINT or SIGTERM mid-run (when the process has used about half
  the CPU time of the full run, so machine load does not matter). They must exit 130 with one
  line on stderr, leave the earlier results byte-identical, no staging/temporary files, and
  (sweep) no worker processes behind.
* In-process: an interrupt while the staging folder is written removes it; an interrupt during
  the final renames is held until every framework folder is swapped in.

Numba code cannot be interrupted mid-kernel: the signal lands when the engine call returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or os.name != "posix",
                                reason="needs POSIX signals and /proc")

LONG = """\
name = "long"
seed = 5

[simulation]
duration_s = {duration}

[model]
name = "llama-3.1-8b"

[hardware]
gpu = "h100-sxm"

[[workload.clients]]
name = "chat"
arrival = {{ process = "poisson", rate = 6.0 }}
prompt_tokens = {{ dist = "lognormal", mean = 600, sigma = 0.9, max = 8192 }}
output_tokens = {{ dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }}
conversation = {{ turns = {{ dist = "uniform", min = 1, max = 4 }}, think_time_s = 5 }}
system_prompt_tokens = 600
num_system_prompts = 8

[[frameworks]]
name = "apc"

[[frameworks]]
name = "no-cache"
enable_prefix_caching = false
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (and its waited-for children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("inf")
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listing(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k != "ORACLE_DEBUG"}
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    return e


def _default_sigint() -> None:
    """In the child: SIGINT back to its default, so Python turns it into KeyboardInterrupt
    even when this test runs in a background job that ignores SIGINT (as under `cmd &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_full(cmd: list[str], cwd: Path) -> float:
    """Run to completion; return the CPU seconds it used (children included)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    return usage.ru_utime + usage.ru_stime


def interrupt(cmd: list[str], cwd: Path, sig: int, ready):
    """Start ``cmd``; once ``ready(pid, kids)`` holds, send ``sig``. Returns (rc, stderr, kids seen)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    kids: set[int] = set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        kids |= children(proc.pid)
        if ready(proc.pid, kids):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.decode(), kids


def assert_interrupted(rc: int, err: str) -> None:
    assert rc == 130, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err
    assert "Traceback" not in err


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def _all_new(work: Path) -> bool:
    """Every framework's summary comes from the interrupted (seed 6) run."""
    try:
        return all(json.loads((work / "out" / fw / "summary.json").read_text())["seed"] == 6 for fw in ("apc", "no-cache"))
    except (OSError, ValueError, KeyError):
        return False


def no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, left


# -- oracle simulate -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed two-framework run; returns (work folder, scenario, CPU seconds it took)."""
    work = tmp_path_factory.mktemp("interrupt")
    scenario = work / "long.toml"
    scenario.write_text(LONG.format(duration=900))
    cpu = run_full(simulate_cmd(scenario, work / "out", seed=5), work)
    assert (work / "out" / "apc" / "requests.parquet").exists()
    return work, scenario, cpu


def simulate_cmd(scenario: Path, out: Path, *, seed: int) -> list[str]:
    return [sys.executable, "-m", "oracle.cli", "simulate", str(scenario), "--out", str(out), "--seed", str(seed),
            "--quiet", "--steps"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_simulate_keeps_earlier_results(finished_run, sig):
    work, scenario, cpu = finished_run
    before = listing(work)
    # another seed, so a half-overwritten folder could not pass for the old one
    cmd = simulate_cmd(scenario, work / "out", seed=6)
    for fraction in (0.35, 0.25, 0.15, 0.1):   # mid-simulation; earlier if the signal came too late
        rc, err, _ = interrupt(cmd, work, sig, lambda pid, _kids: cpu_seconds(pid) >= fraction * cpu)
        swapped_whole = rc == 130 and _all_new(work) and not _temporaries(work)
        if rc != 0 and not swapped_whole:
            break
        # The run finished, or the signal came while the new results were being swapped in (it is
        # held until every folder is replaced, so they are whole): too late to test; go earlier.
        run_full(simulate_cmd(scenario, work / "out", seed=5), work)   # put the first results back
        before = listing(work)
    assert_interrupted(rc, err)
    assert listing(work) == before     # same files, same bytes: nothing added, removed or changed
    no_temporaries(work)
    summary = json.loads((work / "out" / "apc" / "summary.json").read_text())
    assert summary["seed"] == 5


# -- oracle sweep ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("interrupt_sweep")
    (work / "base.toml").write_text(LONG.format(duration=240))
    sweep = work / "sweep.toml"
    sweep.write_text('base = "base.toml"\n[grid]\n"workload.clients.0.arrival.rate" = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]\n')
    cpu = run_full(sweep_cmd(sweep, work / "out"), work)
    assert (work / "out" / "sweep.parquet").exists()
    return work, sweep, cpu


def sweep_cmd(sweep: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "oracle.cli", "sweep", str(sweep), "--out", str(out), "--workers", "2", "--quiet"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_sweep_keeps_earlier_results_and_stops_workers(finished_sweep, sig):
    work, sweep, cpu = finished_sweep
    # once the two workers together used about 40 % of the full sweep's CPU time
    for fraction in (0.4, 0.25, 0.1):
        table = (work / "out" / "sweep.parquet").read_bytes()    # (again if a try ran to the end)
        manifest = (work / "out" / "sweep.json").read_bytes()
        points = sorted((work / "out" / "points").glob("*.json"))
        rc, err, kids = interrupt(sweep_cmd(sweep, work / "out"), work, sig,
                                  lambda _pid, kids: sum(cpu_seconds(k) for k in kids if alive(k)) >= fraction * cpu)
        if rc != 0:
            break
    assert rc == 130, (rc, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    # earlier results untouched; every point file is whole; nothing temporary left
    assert (work / "out" / "sweep.parquet").read_bytes() == table
    assert (work / "out" / "sweep.json").read_bytes() == manifest
    assert sorted((work / "out" / "points").glob("*.json")) == points
    for p in points:
        assert json.loads(p.read_text())["rows"]
    no_temporaries(work)
    # no worker outlives the parent
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if alive(k)], kids


# -- in-process: staging and the final renames -----------------------------------------------
@pytest.fixture(scope="module")
def small_result():
    import oracle
    raw = {"name": "small", "seed": 3, "simulation": {"num_requests": 30}, "model": {"name": "llama-3.1-8b"},
           "hardware": {"gpu": "h100-sxm"},
           "workload": {"clients": [{"arrival": {"rate": 4.0}, "prompt_tokens": 300, "output_tokens": 20}]},
           "frameworks": [{"name": "a"}, {"name": "b", "enable_prefix_caching": False}]}
    return oracle.simulate(raw)


def test_interrupt_while_staging_leaves_earlier_results(small_result, tmp_path, monkeypatch):
    import oracle.metrics.output as output
    out = tmp_path / "out"
    small_result.write(out)
    before = listing(tmp_path)
    calls = []
    real = output.write_text

    def interrupted_write(path, text):
        calls.append(path)
        if len(calls) == 2:        # the second framework's summary.json
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(output, "write_text", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        small_result.write(out)
    assert len(calls) == 2
    assert listing(tmp_path) == before
    no_temporaries(tmp_path)


def test_signal_during_renames_is_held_until_all_are_swapped(tmp_path):
    from oracle.metrics.writers import make_staging_dir, publish
    dest = tmp_path / "out"
    for name in ("a", "b", "c"):
        (dest / name).mkdir(parents=True)
        (dest / name / "summary.json").write_text("old\n")
    staging = make_staging_dir(dest)
    for name in ("a", "b", "c"):
        (staging / name).mkdir()
        (staging / name / "summary.json").write_text("new\n")

    def names():
        yield "a"
        os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C after the first swap
        time.sleep(0.05)
        yield "b"
        os.kill(os.getpid(), signal.SIGTERM)
        yield "c"

    previous = signal.getsignal(signal.SIGTERM)
    previous_int = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when run in a job that ignores SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):   # delivered after the loop, the first signal wins
            publish(staging, dest, names())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    for name in ("a", "b", "c"):
        assert (dest / name / "summary.json").read_text() == "new\n"
    assert not staging.exists()
    no_temporaries(tmp_path)
