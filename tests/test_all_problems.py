"""Issue #18 part 3: every problem of a file in one run.

`oracle validate` (and every command that reads scenarios, sweeps or original-tool configs)
reports all problems at once: one ``error: <file>: <key path>: <reason>`` line each, in file
order, exit code 1, nothing written. Through the Python API the exception carries the list
(``exc.problems``). Checks that combine settings are skipped while a setting they need is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import oracle
from oracle._config import Table, key_position
from oracle.cli import build_app
from oracle.errors import ErrorList, OracleError, Problems, ScenarioError
from oracle.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "scenarios" / "quickstart.toml"

# The issue's example: a typo in [[frameworks]] and no length in [simulation].
ISSUE = """name = "issue18"

[model]
name = "llama-3.1-8b"

[hardware]
gpu = "h100-sxm"

[[workload.clients]]
arrival = { rate = 2.0 }
prompt_tokens = 100
output_tokens = 50

[[frameworks]]
name = "vllm"
max_num_seqz = 64
"""
ISSUE_LINES = ["frameworks.0.max_num_seqz: unknown key (did you mean 'max_num_seqs'?)",
               "simulation: set duration_s and/or num_requests so the generated workload ends"]

# One problem (at least) in every section, in file order.
MANY = """name = "many"
sed = 3

[simulation]
num_requests = 100
warm_up_s = -1

[model]
name = "llama-3.1-8b"
dtype = "fp4"

[hardware]
gpu = "h100-sxn"

[[workload.clients]]
name = "chat"
arrival = { rate = -2.0 }
prompt_tokens = { dist = "unifrom", min = 10, max = 100 }
output_tokens = { dist = "lognormal", mean = 50, sigma = 0.5, mx = 200 }

[[frameworks]]
name = "a"
block_size = 0
max_num_seqz = 64

[[frameworks]]
name = "b"
router = "round_robbin"
enable_chunked_prefil = false

[slo]
ttft_ms = -5

[output]
format = "xlsx"
"""
MANY_LINES = [
    "sed: unknown key (did you mean 'seed'?)",
    "simulation.warm_up_s: must be >= 0, got -1",
    "model.dtype: unknown value 'fp4' (did you mean 'nvfp4'?); choose one of: bf16, fp16, fp8, mxfp4, nvfp4",
    "hardware.gpu: unknown GPU 'h100-sxn' (did you mean 'h100-sxm'?)",
    "workload.clients.0.arrival.rate: must be > 0, got -2",
    "workload.clients.0.prompt_tokens.dist: unknown value 'unifrom' (did you mean 'uniform'?)",
    "workload.clients.0.output_tokens.mx: unknown key (did you mean 'max'?)",
    "frameworks.0.block_size: must be >= 1, got 0",
    "frameworks.0.max_num_seqz: unknown key (did you mean 'max_num_seqs'?)",
    "frameworks.1.router: unknown value 'round_robbin' (did you mean 'round_robin'?)",
    "frameworks.1.enable_chunked_prefil: unknown key (did you mean 'enable_chunked_prefill'?)",
    "slo.ttft_ms: must be > 0, got -5",
    "output.format: unknown value 'xlsx'",
]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.delenv("ORACLE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args):
    return CliRunner().invoke(build_app(), [str(a) for a in args])


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_lines(result, path, expected: list[str]) -> list[str]:
    """Exit 1, nothing on stdout, one ``error: <path>: ...`` line per expected fragment, in order."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, fragment in zip(lines, expected):
        assert line.startswith(f"error: {path}: {fragment}"), (line, fragment)
    return lines


# -- the issue's example -----------------------------------------------------------------------
def test_issue_example_validate_reports_both(work):
    path = work / "issue.toml"
    path.write_text(ISSUE)
    lines = assert_lines(cli("validate", path), path, ISSUE_LINES)
    assert lines == [f"error: {path}: {line}" for line in ISSUE_LINES]


def test_issue_example_simulate_reports_both_and_writes_nothing(work):
    path = work / "issue.toml"
    path.write_text(ISSUE)
    before = listing(work)
    assert_lines(cli("simulate", path, "--out", work / "out", "--quiet"), path, ISSUE_LINES)
    assert listing(work) == before


def test_issue_example_in_a_real_process(work):
    path = work / "issue.toml"
    path.write_text(ISSUE)
    env = {k: v for k, v in os.environ.items() if k != "ORACLE_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", "validate", str(path), str(QUICK)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {path}: {line}" for line in ISSUE_LINES]
    assert proc.stdout.startswith(f"ok: {QUICK}: ")   # the valid file is still checked and reported


# -- several sections ---------------------------------------------------------------------------
def test_problems_in_every_section_in_file_order(work):
    path = work / "many.toml"
    path.write_text(MANY)
    assert_lines(cli("validate", path), path, MANY_LINES)
    before = listing(work)
    assert_lines(cli("simulate", path, "--out", work / "out", "--quiet"), path, MANY_LINES)
    assert listing(work) == before


def test_several_files_each_with_all_their_problems(work):
    a, b = work / "a.toml", work / "b.toml"
    a.write_text(ISSUE)
    b.write_text(MANY)
    result = cli("validate", a, QUICK, b)
    assert result.exit_code == 1
    expected = [f"error: {a}: {x}" for x in ISSUE_LINES] + [f"error: {b}: {x}" for x in MANY_LINES]
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected)), lines
    assert result.stdout.splitlines() == [f"ok: {QUICK}: quickstart: llama-3.1-8b on h100-sxm; "
                                          "frameworks: vllm (1x tp1 pp1)"]


def test_every_unknown_key_of_a_table(work):
    path = work / "typos.toml"
    path.write_text(QUICK.read_text().replace("[[frameworks]]", "[[frameworks]]\nblok_size = 8\nREPLICAS = 2\n"
                                                                "max_num_seqz = 4"))
    assert_lines(cli("validate", path), path, [
        "frameworks.0.blok_size: unknown key (did you mean 'block_size'?)",
        "frameworks.0.REPLICAS: unknown key (did you mean 'replicas'?)",     # case does not hide the hint
        "frameworks.0.max_num_seqz: unknown key (did you mean 'max_num_seqs'?)"])


# -- checks that depend on a setting that is wrong are skipped --------------------------------
def _quick_raw() -> dict:
    return oracle.load_scenario(QUICK).raw


def _problems(raw: dict) -> list[str]:
    with pytest.raises(OracleError) as info:
        scenario_from_dict(raw)
    return [str(p) for p in info.value.problems]


def test_checks_that_need_the_model_are_skipped_when_it_is_unknown():
    raw = _quick_raw()
    raw["model"] = {"name": "llama-9-8b"}
    raw["frameworks"] = [{"name": "f", "tp": 64, "max_model_len": 10**9, "block_size": -1}]
    got = _problems(raw)
    assert len(got) == 2, got   # no "tp exceeds heads", no "max_model_len <= context", no memory fit
    assert got[0].startswith("model.name: unknown model 'llama-9-8b'")
    assert got[1] == "frameworks.0.block_size: must be >= 1, got -1"


def test_prompt_check_skipped_while_max_model_len_is_wrong():
    raw = _quick_raw()
    raw["frameworks"] = [{"name": "f", "max_model_len": "4096"}]
    raw["workload"]["clients"][0]["prompt_tokens"] = {"dist": "uniform", "min": 1, "max": 9000}
    assert _problems(raw) == ["frameworks.0.max_model_len: must be an integer, got string '4096'"]
    raw["frameworks"] = [{"name": "f", "max_model_len": 4096}, {"name": "g", "max_model_len": 2048}]
    got = _problems(raw)   # both frameworks are too short: both named
    assert [p.split(" of framework ")[1][:3] for p in got] == ["'f'", "'g'"], got


def test_length_check_skipped_while_duration_is_wrong():
    raw = _quick_raw()
    raw["simulation"] = {"duration_s": -5}
    assert _problems(raw) == ["simulation.duration_s: must be > 0, got -5"]


def test_a_bad_pattern_does_not_invent_more_problems():
    raw = _quick_raw()
    raw["workload"]["clients"][0]["conversation"] = {"pattern": "agnet", "tool_output_tokens": 100, "turns": 3,
                                                     "trns": 4}
    assert _problems(raw) == [
        "workload.clients.0.conversation.pattern: unknown value 'agnet' (did you mean 'agent'?); "
        "choose one of: chat, agent, branch",
        "workload.clients.0.conversation.trns: unknown key (did you mean 'turns'?)"]


# -- the Python API -----------------------------------------------------------------------------
def test_api_exception_carries_the_list(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text(MANY)
    with pytest.raises(ScenarioError) as info:
        oracle.load_scenario(path)
    exc = info.value
    assert isinstance(exc, ErrorList)
    assert len(exc.problems) == len(MANY_LINES)
    for p, fragment in zip(exc.problems, MANY_LINES):
        assert isinstance(p, ScenarioError) and not isinstance(p, ErrorList)
        assert p.file == str(path) and "\n" not in str(p)
        assert str(p).startswith(f"{path}: {fragment}")
    assert (exc.file, exc.key, exc.reason) == (str(path), "sed", exc.problems[0].reason)   # the first one
    assert str(exc) == "\n".join(str(p) for p in exc.problems)
    with pytest.raises(ErrorList) as info:     # simulate() validates the same way, before anything runs
        oracle.simulate(path)
    assert [str(p) for p in info.value.problems] == [str(p) for p in exc.problems]


def test_api_single_problem_is_a_plain_error():
    raw = _quick_raw()
    raw["frameworks"][0]["block_size"] = 0
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw)
    assert type(info.value) is ScenarioError
    assert info.value.problems == [info.value]
    assert info.value.key == "frameworks.0.block_size"


def test_problems_collector_and_table():
    problems = Problems()
    t = Table({"a": "x", "b": 5, "zz": 1, "cc": 2}, "sec", problems=problems)
    assert t.int("a", 3) == 3               # a bad optional value: reported, default returned
    assert not t.ok("a") and t.ok("b")
    with problems.guard():
        t.str("b")                          # a bad required value: reported, the part is skipped
        raise AssertionError("not reached")
    t.done()                                # every unknown key
    assert [str(p) for p in problems.items] == ["sec.a: must be an integer, got string 'x'",
                                                 "sec.b: must be a string, got integer 5",
                                                 "sec.zz: unknown key", "sec.cc: unknown key"]
    with pytest.raises(ErrorList) as info:
        problems.raise_if_any(file="f.toml")
    assert [p.file for p in info.value.problems] == ["f.toml"] * 4
    # without a collector the first problem is raised, as before
    with pytest.raises(ScenarioError, match="sec.a: must be an integer"):
        Table({"a": "x"}, "sec").int("a", 3)
    assert key_position({"x": 1, "y": {"p": 1, "q": 2}}, "y.q") == (1, 1)
    assert key_position({"x": 1}, "missing") == (1,)


# -- sweeps --------------------------------------------------------------------------------------
SWEEPS = ROOT / "tests" / "data" / "bad_inputs" / "sweeps"


def test_sweep_file_problems_together(work):
    path = work / "sweep.toml"
    path.write_text(f'base = "{SWEEPS / "base.toml"}"\nrepeat = 2\n[grid]\n"frameworks.0.replicas" = []\n'
                    '"output.dir" = ["x"]\n')
    assert_lines(cli("validate", path), path, ["repeat: unknown key (did you mean 'repeats'?)",
                                               "grid.frameworks.0.replicas: must list at least one value",
                                               "output.dir: cannot be swept"])


def test_sweep_points_each_problem_once(work):
    path = work / "sweep.toml"
    path.write_text(f'base = "{SWEEPS / "base.toml"}"\n[grid]\n"frameworks.0.replicas" = [1, 0, 2]\n'
                    '"workload.clients.0.arrival.rate" = [2.0, -1.0]\n"frameworks.0.max_num_seqz" = [8]\n')
    base = SWEEPS / "base.toml"
    expected = ["point 0: frameworks.0.max_num_seqz: unknown key (did you mean 'max_num_seqs'?) (in ",
                "point 1: workload.clients.0.arrival.rate: must be > 0, got -1 (in ",
                "point 2: frameworks.0.replicas: must be >= 1, got 0 (in "]
    lines = assert_lines(cli("validate", path), path, expected)
    assert all(line.endswith(f"(in {base})") for line in lines)
    before = listing(work)
    assert_lines(cli("sweep", path, "--out", work / "out", "--workers", "1", "--quiet"), path, expected)
    assert listing(work) == before


# -- original-tool configs ------------------------------------------------------------------------
def test_legacy_config_problems_together(work):
    text = (ROOT / "tests" / "data" / "legacy" / "single_gpu.yaml").read_text()
    text = text.replace("weight: 1.0", "weight: -1.0").replace('type: "VLLM"', 'type: "VLMM"')
    text = text.replace("max_simulation_time: 30", "max_simulation_time: -30")
    path = work / "old.yaml"
    path.write_text(text)
    assert_lines(cli("validate", path), path, ["workload.client_profiles.0.weight: must be >= 0, got -1",
                                               "simulation.max_simulation_time: must be > 0, got -30",
                                               "frameworks_to_test.0.type: unknown framework type 'VLMM'"])


def test_legacy_converted_scenario_problems_together(work):
    text = (ROOT / "tests" / "data" / "legacy" / "single_gpu.yaml").read_text()
    text = text.replace("block_size: 16", "block_size: 0").replace("max_num_seqs: 128", "max_num_seqs: 0")
    path = work / "old.yaml"
    path.write_text(text)
    assert_lines(cli("validate", path), path, [
        "frameworks_to_test.0.config.block_size: must be >= 1, got 0",
        "frameworks_to_test.0.config.max_num_seqs: must be >= 1, got 0"])


# -- workload-only files (oracle workload generate / stats) ---------------------------------------
def test_workload_only_file_problems_together(work):
    path = work / "wl.toml"
    path.write_text('seed = 1\n[[workload.clients]]\narrival = { rate = 0 }\nprompt_tokens = 10\n'
                    'output_tokens = { dist = "constant", vale = 5 }\n')
    assert_lines(cli("workload", "generate", path, "-o", work / "w.parquet"), path, [
        "workload.clients.0.arrival.rate: must be > 0, got 0",
        "workload.clients.0.output_tokens.vale: unknown key (did you mean 'value'?)",
        "workload.clients.0.output_tokens.value: is required",
        "simulation: set duration_s and/or num_requests so the generated workload ends"])
    assert not (work / "w.parquet").exists()
