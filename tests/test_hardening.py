"""Issue #8: bad input never crashes with a traceback and never writes anything.

Every bad scenario file, sweep file, trace, path and option goes through the real CLI
(``CliRunner`` on ``build_app()``; a few through ``python -m oracle.cli`` and the ``oracle``
console script) and must give exit code 1, exactly one line on stderr (``error: <file>[:line]:
<key path>: <reason>``), nothing on stdout, no traceback, and leave the working folder exactly
as it was (no output folder, no hidden staging/temporary files). Also: memory limits refuse
runs up front, and token totals past 2**31 stay exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from oracle.cli import build_app
from test_scenario import BAD_CASES as SCENARIO_CASES  # tests/data/bad_scenarios: (key, reason)
from test_traces import MALFORMED as TRACE_CASES  # tests/data/traces: (name, fmt, line, reason)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
BAD_SCENARIOS = DATA / "bad_scenarios"
BAD = DATA / "bad_inputs"

# tests/data/bad_inputs/scenarios: stem -> (file named in the message, key path, reason fragment)
MORE_SCENARIOS = {
    "batched_tokens_zero": (None, "frameworks.0.max_num_batched_tokens", "must be >= 1, got 0"),
    "binary_garbage": (None, None, "not a text (UTF-8) TOML file"),
    "block_size_string": (None, "frameworks.0.block_size", "must be an integer, got string '16'"),
    "duration_zero": (None, "simulation.duration_s", "must be > 0, got 0"),
    "empty": (None, "model", "is required"),   # and hardware, workload: see SEVERAL
    "max_model_len_over_context": (None, "frameworks.0.max_model_len", "must be <= 131072, got 10000000"),
    "model_is_string": (None, "model", "must be a table, got string"),
    "num_requests_zero": (None, "simulation.num_requests", "must be >= 1, got 0"),
    "prompt_max_huge": (None, "workload.clients.0.prompt_tokens.max", "must be < 2**31 tokens"),
    "prompt_unbounded_huge": (None, "workload.clients.0", "a request would have 2**31 tokens or more"),
    "rate_huge": (None, None, "this run needs at least"),
    "rate_inf": (None, "workload.clients.0.arrival.rate", "must be a finite number, got inf"),
    "rate_nan": (None, "workload.clients.0.arrival.rate", "must be a finite number, got nan"),
    "replicas_huge": (None, "frameworks.0.replicas", "must be <= 100000, got 1000000000"),
    "seed_over_int64": (None, "seed", "must be <= 9223372036854775807"),
    "sigma_nan": (None, "workload.clients.0.prompt_tokens.sigma", "must be a finite number, got nan"),
    "slo_negative": (None, "slo.ttft_ms", "must be > 0, got -1"),
    "think_time_negative": (None, "workload.clients.0.conversation.think_time_s", "must be >= 0, got -5"),
    "too_many_requests": (None, None, "(about 1e+12 requests)"),
    "trace_binary": (None, "workload.trace.path", "binary_garbage.jsonl:1: not a text (UTF-8) JSON lines file"),
    "trace_is_directory": (None, "workload.trace.path", "not a file"),
    "trace_truncated": (BAD / "scenarios" / "../traces/mooncake_truncated.jsonl", None, ":3: malformed JSON"),
    "turns_over_cap": (None, "workload.clients.0.conversation.turns", "max must be <= 4096"),
    "unknown_client_key": (None, "workload.clients.0.system_prompt_token", "did you mean 'system_prompt_tokens'"),
    "unknown_dtype": (None, "model.dtype", "unknown value 'fp4'"),
}

# files with more than one problem: stem -> every line expected after "error: <file>: " (all in one run)
SEVERAL = {
    "empty": ["model: is required", "hardware: is required", "workload: is required"],
}

# tests/data/bad_inputs/traces: name -> (1-based line or None, reason fragment)
MORE_TRACES = {
    "mooncake_truncated.jsonl": (3, "malformed JSON"),
    "mooncake_negative_length.jsonl": (2, "input_length must be >= 1, got -100"),
    "mooncake_nan_timestamp.jsonl": (2, "timestamp must be a finite number, got number nan"),
    "mooncake_huge_length.jsonl": (3, "input_length must be < 2**31, got 3000000000"),
    "token_ids_negative_token.jsonl": (1, "input_tok_ids must hold integers in 0..2**60-1, got integer -3"),
    "token_ids_inf_time.jsonl": (2, "arrival_time_s must be a finite number, got number inf"),
    "azure_wrong_columns.csv": (1, "missing column 'TIMESTAMP'; have: time, prompt, completion"),
    "azure_truncated.csv": (3, "TIMESTAMP '2023-11-16 18:15:4' is not a date-time"),
    "azure_extra_field.csv": (3, "too many fields (4, header has 3)"),
    "azure_empty.csv": (None, "empty trace"),
    "binary_garbage.jsonl": (1, "not a text (UTF-8) JSON lines file"),
    "binary_garbage.csv": (1, "not a text (UTF-8) CSV file"),
    "binary_garbage.parquet": (None, "not a readable Parquet file"),
    "workload_unsorted.parquet": (None, "arrival times of requests without parent must be non-decreasing"),
}

# tests/data/bad_inputs/sweeps: stem -> (file named, key path, reason fragment)
SWEEPS = BAD / "sweeps"
BAD_SWEEPS = {
    "base_invalid": (None, "point 0: workload.clients.0.arrival.rate", "must be > 0, got -1 (in "),
    "base_not_found": (SWEEPS / "no_such_base.toml", None, "file not found"),
    "grid_empty_list": (None, "grid.frameworks.0.replicas", "must list at least one value"),
    "grid_not_array": (None, "grid.frameworks.0.replicas", "must be an array of values to sweep"),
    "index_out_of_range": (None, "point 0: frameworks.3.replicas", "out of range"),
    "missing_base_key": (None, "base", "is required"),
    "nan_rate": (None, "point 1: workload.clients.0.arrival.rate", "must be a finite number, got nan"),
    "output_swept": (None, "output.dir", "cannot be swept"),
    "path_through_scalar": (None, "point 0: model.name", "must be a string, got table"),
    "repeats_zero": (None, "repeats", "must be >= 1, got 0"),
    "syntax_error": (None, None, "TOML syntax error: Unclosed array"),
    "too_many_points": (None, "grid", "expands to 1,030,301 points, more than the limit of 1,000,000"),
    "unknown_key_in_point": (None, "point 1: frameworks.0.replica", "did you mean 'replicas'"),
    "unknown_top_key": (None, "grids", "did you mean 'grid'"),
    "wrong_type_repeats": (None, "repeats", "must be an integer, got string '3'"),
    "zero_replicas_point": (None, "point 2: frameworks.0.replicas", "must be >= 1, got 0"),
}

TRACE_SCENARIO = """name = "trace"
[model]
name = "llama-3.1-8b"
[hardware]
gpu = "h100-sxm"
[workload.trace]
path = "{path}"
[[frameworks]]
name = "vllm"
"""


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder (default output folders would land here); no ORACLE_DEBUG."""
    monkeypatch.delenv("ORACLE_DEBUG", raising=False)
    monkeypatch.delenv("ORACLE_MAX_MEMORY_GB", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with the bytes of files."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def cli(*args, env: dict | None = None):
    return CliRunner().invoke(build_app(), [str(a) for a in args], env=env)


def assert_one_line_error(result, where: Path | str, *fragments: str) -> str:
    """Exit 1, exactly one ``error: <where>...`` line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"error: {where}"), line
    for fragment in fragments:
        if fragment:
            assert fragment in line, (fragment, line)
    assert "Traceback" not in result.output and "internal error" not in line, line
    assert result.stdout == "", result.stdout
    return line


def nothing_written(work: Path, before: dict) -> None:
    after = listing(work)
    assert after == before, sorted(set(after) ^ set(before))


# -- scenario files --------------------------------------------------------------------------
SCENARIO_MATRIX = ([(BAD_SCENARIOS / f"{stem}.toml", None, key, reason) for stem, (key, reason) in
                    sorted(SCENARIO_CASES.items())]
                   + [(BAD / "scenarios" / f"{stem}.toml", named, key, reason) for stem, (named, key, reason) in
                      sorted(MORE_SCENARIOS.items())])


def test_every_bad_input_file_has_an_expectation():
    assert {p.stem for p in (BAD / "scenarios").glob("*.toml")} == set(MORE_SCENARIOS)
    assert {p.name for p in (BAD / "traces").iterdir()} == set(MORE_TRACES)
    assert {p.stem for p in SWEEPS.glob("*.toml")} == set(BAD_SWEEPS) | {"base"}


@pytest.mark.parametrize("path, named, key, reason", SCENARIO_MATRIX,
                         ids=[f"{p.parent.name}/{p.stem}" for p, *_ in SCENARIO_MATRIX])
def test_bad_scenario_file(work, path, named, key, reason):
    before = listing(work)
    # ORACLE_MAX_MEMORY_GB pins the limit so the memory refusals do not depend on this machine
    result = cli("simulate", path, "--out", work / "out", "--quiet", env={"ORACLE_MAX_MEMORY_GB": "16"})
    if path.stem in SEVERAL and path.parent.name == "scenarios":
        assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.output
        assert result.stderr.splitlines() == [f"error: {path}: {line}" for line in SEVERAL[path.stem]]
        nothing_written(work, before)
        return
    line = assert_one_line_error(result, named or path, reason)
    if key is not None:
        assert f": {key}" in line or f"{key}:" in line, line
    nothing_written(work, before)


# -- traces ----------------------------------------------------------------------------------
TRACE_MATRIX = ([(DATA / "traces" / name, line, reason) for name, _, line, reason in TRACE_CASES]
                + [(BAD / "traces" / name, line, reason) for name, (line, reason) in sorted(MORE_TRACES.items())])


@pytest.mark.parametrize("trace, line, reason", TRACE_MATRIX,
                         ids=[f"{t.parent.name}/{t.name}" for t, *_ in TRACE_MATRIX])
def test_bad_trace(work, trace, line, reason):
    """A scenario replaying the trace (simulate) and `workload stats` name the trace file and line."""
    scenario = work / "scenario.toml"
    scenario.write_text(TRACE_SCENARIO.format(path=trace))
    before = listing(work)
    where = f"{trace}:{line}: " if line else f"{trace}: "
    for result in (cli("simulate", scenario, "--out", work / "out", "--quiet"), cli("workload", "stats", trace)):
        assert result.exit_code == 1, result.output
        msg = result.stderr.strip()
        assert len(msg.splitlines()) == 1 and msg.startswith("error: "), msg
        assert where + reason in msg or (where in msg and reason in msg), msg
        assert "Traceback" not in result.output and result.stdout == ""
    nothing_written(work, before)


@pytest.mark.parametrize("kind", ["missing", "directory", "parent_is_file"])
def test_trace_path_that_cannot_be_read(work, kind):
    (work / "a_file").write_text("not a folder\n")
    trace = {"missing": work / "nope.jsonl", "directory": work,
             "parent_is_file": work / "a_file" / "trace.jsonl"}[kind]
    scenario = work / "scenario.toml"
    scenario.write_text(TRACE_SCENARIO.format(path=trace))
    before = listing(work)
    reason = "not a file" if kind == "directory" else "not found"
    assert_one_line_error(cli("simulate", scenario, "--out", work / "out", "--quiet"), scenario,
                          "workload.trace.path", reason)
    assert_one_line_error(cli("workload", "stats", trace), trace, reason)
    nothing_written(work, before)


# -- sweep files -----------------------------------------------------------------------------
@pytest.mark.parametrize("stem", sorted(BAD_SWEEPS))
def test_bad_sweep_file(work, stem):
    path = SWEEPS / f"{stem}.toml"
    named, key, reason = BAD_SWEEPS[stem]
    before = listing(work)
    result = cli("sweep", path, "--out", work / "out", "--workers", "1", "--quiet")
    line = assert_one_line_error(result, named or path, reason)
    if key is not None:
        assert f": {key}: " in line, line
    nothing_written(work, before)


# -- paths, output folders, options ----------------------------------------------------------
QUICK = ROOT / "scenarios" / "quickstart.toml"


def _scenario_paths(work: Path) -> dict[str, tuple[Path, str]]:
    (work / "a_file").write_text("not a folder\n")
    return {"missing": (work / "nope.toml", "file not found"),
            "directory": (work, "is a directory, expected a TOML file"),
            "parent_is_file": (work / "a_file" / "scenario.toml", "cannot read: Not a directory"),
            "legacy_yaml_syntax": (DATA / "legacy" / "bad_syntax.yaml", ":7: YAML syntax error")}


@pytest.mark.parametrize("kind", ["missing", "directory", "parent_is_file", "legacy_yaml_syntax"])
def test_unreadable_scenario_path(work, kind):
    path, reason = _scenario_paths(work)[kind]
    before = listing(work)
    for command in ("simulate", "validate"):
        assert_one_line_error(cli(command, path, "--quiet") if command == "simulate" else cli(command, path),
                              path, reason)
    nothing_written(work, before)


@pytest.mark.parametrize("kind", ["under_a_file", "is_a_file", "output_dir_under_a_file", "extra_copy_under_a_file"])
def test_output_folder_that_cannot_be_written(work, kind):
    """Refused before simulating; the file in the way is untouched and nothing else appears."""
    blocker = work / "a_file"
    blocker.write_text("precious\n")
    scenario = QUICK
    out_args = []
    if kind == "under_a_file":
        out_args, where, reason = ["--out", blocker / "out"], blocker / "out", f"{blocker} is a file, not a folder"
    elif kind == "is_a_file":
        out_args, where, reason = ["--out", blocker], blocker, "it is a file"
    else:
        text = QUICK.read_text()
        key = "dir" if kind == "output_dir_under_a_file" else "summary_json"
        scenario = work / "scenario.toml"
        scenario.write_text(text.replace("[slo]", f'[output]\n{key} = "a_file/{"out" if key == "dir" else "s.json"}"'
                                                  "\n\n[slo]"))
        where = work / "a_file/out" if key == "dir" else "a_file"
        reason = "is a file" if key == "dir" else "it is a file"
    before = listing(work)
    assert_one_line_error(cli("simulate", scenario, *out_args, "--quiet"), where, "cannot write the output folder",
                          reason)
    nothing_written(work, before)


def test_sweep_output_folder_under_a_file(work):
    (work / "a_file").write_text("precious\n")
    sweep = work / "sweep.toml"
    sweep.write_text(f'base = "{SWEEPS / "base.toml"}"\n[grid]\n"frameworks.0.replicas" = [1, 2]\n')
    before = listing(work)
    assert_one_line_error(cli("sweep", sweep, "--out", work / "a_file" / "out", "--workers", "1", "--quiet"),
                          work / "a_file" / "out", "cannot create the output folder")
    nothing_written(work, before)


def test_workload_generate_into_a_file_path(work):
    (work / "a_file").write_text("precious\n")
    before = listing(work)
    assert_one_line_error(cli("workload", "generate", SWEEPS / "base.toml", "-o", work / "a_file" / "w.parquet"),
                          work / "a_file", "it is a file")
    nothing_written(work, before)


@pytest.mark.parametrize("args, env, fragment", [
    (["--max-memory", "0"], None, "--max-memory must be a positive number of GiB, got 0"),
    (["--max-memory", "-1"], None, "--max-memory must be a positive number of GiB, got -1"),
    (["--max-memory", "nan"], None, "--max-memory must be a positive number of GiB, got nan"),
    (["--format", "xlsx"], None, "--format must be one of parquet, csv, vllm-bench, prometheus (comma-separated), got 'xlsx'"),
    ([], {"ORACLE_MAX_MEMORY_GB": "lots"}, "ORACLE_MAX_MEMORY_GB must be a positive number of GiB, got 'lots'"),
], ids=["max_memory_zero", "max_memory_negative", "max_memory_nan", "format", "env_not_a_number"])
def test_bad_options(work, args, env, fragment):
    before = listing(work)
    assert_one_line_error(cli("simulate", QUICK, "--out", work / "out", "--quiet", *args, env=env), "", fragment)
    nothing_written(work, before)


def test_debug_shows_the_traceback(work):
    env = {**os.environ, "ORACLE_DEBUG": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", "validate", str(BAD_SCENARIOS / "negative_rate.toml")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "ScenarioError" in proc.stderr


# -- real processes --------------------------------------------------------------------------
def _entry_points() -> list[list[str]]:
    eps = [[sys.executable, "-m", "oracle.cli"], [sys.executable, "-m", "oracle"]]
    script = shutil.which("oracle")
    if script is not None:
        eps.append([script])
    return eps


@pytest.mark.parametrize("entry", _entry_points(),
                         ids=lambda e: " ".join(["python", *e[1:]]) if len(e) > 1 else "oracle")
def test_real_processes(work, entry):
    """The installed entry points behave the same: exit 1, one stderr line, nothing written."""
    (work / "a_file").write_text("precious\n")
    cases = [
        (["validate", BAD_SCENARIOS / "syntax_error.toml"], f"{BAD_SCENARIOS / 'syntax_error.toml'}: TOML syntax"),
        (["simulate", BAD / "scenarios" / "trace_truncated.toml", "--out", work / "out"], "mooncake_truncated.jsonl:3: malformed"),
        (["workload", "stats", BAD / "traces" / "binary_garbage.csv"], "binary_garbage.csv:1: not a text"),
        (["sweep", SWEEPS / "zero_replicas_point.toml", "--out", work / "out"], "point 2: frameworks.0.replicas"),
        (["simulate", QUICK, "--out", work / "a_file" / "out"], "is a file, not a folder"),
    ]
    if entry[-1] != "oracle.cli":
        cases = cases[:2]   # the console script and ``python -m oracle``: the same code behind, two cases are enough
    env = {k: v for k, v in os.environ.items() if k != "ORACLE_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    before = listing(work)
    for args, fragment in cases:
        proc = subprocess.run([*entry, *map(str, args)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
    nothing_written(work, before)


# -- scale limits ----------------------------------------------------------------------------
def test_max_memory_refuses_before_generating(work):
    """A lower bound (num_requests x bytes per request) is checked before the workload exists."""
    before = listing(work)
    line = assert_one_line_error(cli("simulate", QUICK, "--out", work / "out", "--quiet", "--max-memory", "0.0001"),
                                 QUICK, "this run needs at least", "MiB (about 720 requests)", "only 0.1 MiB",
                                 "raise --max-memory")
    assert "GiB" not in line.split("needs at least")[1].split("(")[0]
    # the same through the environment
    assert_one_line_error(cli("simulate", QUICK, "--out", work / "out", "--quiet",
                              env={"ORACLE_MAX_MEMORY_GB": "0.0001"}), QUICK, "this run needs at least")
    nothing_written(work, before)


def test_max_memory_refuses_after_estimating_the_engine(work):
    """Few requests but a huge pinned KV pool: the full estimate (after generation) refuses."""
    scenario = work / "big_pool.toml"
    scenario.write_text(QUICK.read_text().replace("block_size = 16", "block_size = 16\nnum_gpu_blocks = 20000000"))
    before = listing(work)
    line = assert_one_line_error(cli("simulate", scenario, "--out", work / "out", "--quiet", "--max-memory", "0.5"),
                                 scenario, "this run needs about", "but only 0.5 GiB are available", "requests)")
    need = float(line.split("needs about ")[1].split(" GiB")[0])
    assert need > 0.5
    assert_one_line_error(cli("simulate", scenario, "--out", work / "out", "--quiet",
                              env={"ORACLE_MAX_MEMORY_GB": "0.5"}), scenario, "this run needs about")
    nothing_written(work, before)


def test_token_totals_past_2_31_are_exact():
    """A day-long trace of 17,500 max-length prompts sharing one prefix: > 2**31 prompt tokens,
    prefix-cache queries, hits and saved tokens; every total must be an exact Python int."""
    import oracle
    from oracle.workload.table import KIND_OUTPUT, KIND_USER, Workload, content_keys
    n, prompt = 17_500, 131_071
    offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    keys = np.empty(2 * n, np.uint64)
    keys[0::2] = content_keys(KIND_USER, np.zeros(n))       # the same prompt content every time
    keys[1::2] = content_keys(KIND_OUTPUT, np.arange(n))
    lens = np.empty(2 * n, np.int32)
    lens[0::2], lens[1::2] = prompt, 1
    wl = Workload(arrival_s=np.linspace(0.0, 86_400.0, n), prompt_tokens=np.full(n, prompt), output_tokens=np.ones(n),
                  session=np.full(n, -1), turn=np.zeros(n), parent=np.full(n, -1), think_s=np.zeros(n),
                  client=np.zeros(n), seg_offsets=offsets, seg_key=keys, seg_len=lens, client_names=["day"],
                  source="test: one shared 131071-token prompt").validate()
    raw = {"name": "day", "simulation": {"num_requests": 1}, "model": {"name": "llama-3.1-8b"},
           "hardware": {"gpu": "h100-sxm"},
           "workload": {"clients": [{"arrival": {"rate": 1.0}, "prompt_tokens": 10, "output_tokens": 1}]},
           "frameworks": [{"block_size": 4096, "num_gpu_blocks": 200}]}
    res = oracle.simulate(raw, workload=wl)
    s = res.summary
    total_prompt = n * prompt
    assert total_prompt > 2**31
    pc = s["prefix_caching"]
    cached_per_request = (prompt - 1) // 4096 * 4096          # all full blocks but never the whole prompt
    assert pc["prefix_cache_queries"] == total_prompt
    assert (n - 2) * cached_per_request <= pc["prefix_cache_hits"] <= (n - 1) * cached_per_request
    assert pc["prefix_cache_hits"] > 2**31
    assert pc["total_tokens_saved"] == pc["prefix_cache_hits"] == int(res.requests["cached_tokens"].cast(pl.Int64).sum())
    for v in (pc["prefix_cache_queries"], pc["prefix_cache_hits"], pc["total_tokens_saved"]):
        assert type(v) is int
    effective = s["simulation"]["effective_duration_s"]
    assert s["throughput"]["input_tokens_per_second"] == pytest.approx(total_prompt / effective)
    assert 0.96 < pc["prefill_reduction_ratio"] < 1.0
    df = res.requests
    assert df["computed_tokens"].dtype == pl.Int64 and df["prefilled_tokens"].dtype == pl.Int64
    assert int(df["prompt_tokens"].cast(pl.Int64).sum()) == total_prompt
    assert int(df["prefilled_tokens"].sum()) == total_prompt - pc["prefix_cache_hits"]
    # and it survives the JSON round trip exactly
    back = json.loads(json.dumps(s))
    assert back["prefix_caching"]["prefix_cache_queries"] == total_prompt
