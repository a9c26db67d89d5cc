"""[workload] parsing (errors with key paths) and the distributions' draws."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from data_sources import SOURCES, trace_file
from oracle._config import Table
from oracle.errors import ScenarioError
from oracle.workload.dists import interarrival_gaps, sample
from oracle.workload.spec import (ArrivalSpec, DistSpec, max_prompt_tokens, max_total_tokens, parse_dist,
                                  parse_workload)

DESIGN_EXAMPLE = """
[[workload.clients]]
name = "chat"
arrival = { process = "poisson", rate = 4.0 }
prompt_tokens = { dist = "lognormal", mean = 600, sigma = 0.9, max = 8192 }
output_tokens = { dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }
conversation = { turns = { dist = "uniform", min = 1, max = 8 }, think_time_s = { dist = "constant", value = 5 } }
system_prompt_tokens = 600
num_system_prompts = 8
"""


def parse(text: str, base_dir: Path = Path(".")):
    raw = tomllib.loads(text)
    return parse_workload(Table(raw["workload"], "workload"), base_dir=base_dir)


def test_design_example_parses():
    spec = parse(DESIGN_EXAMPLE)
    (c,) = spec.clients
    assert c.name == "chat" and c.arrival == ArrivalSpec("poisson", 4.0, None)
    assert c.prompt_tokens.dist == "lognormal" and c.prompt_tokens.mean == 600 and c.prompt_tokens.max == 8192
    assert c.conversation.pattern == "chat" and c.conversation.turns.max == 8
    assert c.conversation.think_time_s.value == 5 and not c.conversation.think_time_s.integer
    assert (c.system_prompt_tokens, c.num_system_prompts, c.system_prompt_pool) == (600, 8, "chat")
    # last turn: sys + first (p + o) + 6 middle (p + o) + own p
    assert max_prompt_tokens(spec) == 600 + 8192 + 2048 + 6 * (8192 + 2048) + 8192
    assert max_total_tokens(spec) == max_prompt_tokens(spec) + 2048


def test_first_arrival_and_think_from():
    spec = parse(DESIGN_EXAMPLE.replace("rate = 4.0", 'rate = 4.0, first_arrival = "gap"')
                 .replace("conversation = {", 'conversation = { think_from = "arrival",'))
    (c,) = spec.clients
    assert c.arrival.first_arrival == "gap" and c.conversation.think_from == "arrival"
    (d,) = parse(DESIGN_EXAMPLE).clients
    assert d.arrival.first_arrival == "zero" and d.conversation.think_from == "completion"


def test_bounds_are_none_when_unbounded_or_trace(tmp_path):
    spec = parse(DESIGN_EXAMPLE.replace(", max = 8192", ""))
    assert max_prompt_tokens(spec) is None and max_total_tokens(spec) is None
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    trace = parse('[workload.trace]\npath = "t.csv"\n', tmp_path)
    assert trace.trace.format == "azure" and trace.trace.path == tmp_path / "t.csv"
    assert max_prompt_tokens(trace) is None
    lone = parse(DESIGN_EXAMPLE.replace("conversation = {", "#"))
    assert max_prompt_tokens(lone) == 600 + 8192


def test_shared_arrival_and_defaults():
    spec = parse("""
[workload]
arrival = { process = "gamma", rate = 10, cv = 2 }
[[workload.clients]]
prompt_tokens = 100
output_tokens = { dist = "uniform", min = 5, max = 9 }
share = 3
[[workload.clients]]
name = "b"
prompt_tokens = 10
output_tokens = 10
conversation = { pattern = "agent" }
""")
    a, b = spec.clients
    assert spec.arrival == ArrivalSpec("gamma", 10.0, 2.0)
    assert a.name == "client0" and a.arrival is None and a.share == 3 and b.share == 1
    assert a.prompt_tokens == DistSpec(dist="constant", value=100.0)
    conv = b.conversation
    assert conv.pattern == "agent" and conv.turns.dist == "uniform" and conv.think_time_s.value == 0.5
    assert conv.tool_output_tokens.dist == "lognormal"


BAD = [
    ("unknown key", DESIGN_EXAMPLE + "sytem_prompt_tokens = 3\n",
     "workload.clients.0.sytem_prompt_tokens", "did you mean 'system_prompt_tokens'"),
    ("negative rate", DESIGN_EXAMPLE.replace("rate = 4.0", "rate = -1"), "workload.clients.0.arrival.rate",
     "must be > 0"),
    ("min > max", DESIGN_EXAMPLE.replace("min = 1, max = 8", "min = 9, max = 8"),
     "workload.clients.0.conversation.turns.min", "must be <= max"),
    ("empty clients", "[workload]\nclients = []\n", "workload.clients", "at least one"),
    ("unknown dist", DESIGN_EXAMPLE.replace('dist = "lognormal", mean = 600', 'dist = "lognormale", mean = 600'),
     "workload.clients.0.prompt_tokens.dist", "did you mean 'lognormal'"),
    ("mean and median", DESIGN_EXAMPLE.replace("mean = 600,", "mean = 600, median = 500,"),
     "workload.clients.0.prompt_tokens.mean", "exactly one of mean"),
    ("cv without gamma", DESIGN_EXAMPLE.replace("rate = 4.0", "rate = 4.0, cv = 2"),
     "workload.clients.0.arrival.cv", "only applies to process = 'gamma'"),
    ("gamma cv too small", DESIGN_EXAMPLE.replace('"poisson", rate = 4.0', '"gamma", rate = 4.0, cv = 1e-300'),
     "workload.clients.0.arrival.cv", ">= 1e-06"),
    ("gamma cv too large", DESIGN_EXAMPLE.replace('"poisson", rate = 4.0', '"gamma", rate = 4.0, cv = 1e308'),
     "workload.clients.0.arrival.cv", "<= 1e+06"),
    # numbers so large that sampling or bounding them overflowed (found by tests/test_fuzz.py)
    ("system prompt of 2**63 tokens", DESIGN_EXAMPLE.replace("system_prompt_tokens = 600",
                                                             "system_prompt_tokens = 9223372036854775808"),
     "workload.clients.0.system_prompt_tokens", "<= 2147483647"),
    ("constant of 1e308 tokens", DESIGN_EXAMPLE.replace('{ dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }',
                                                        '{ dist = "constant", value = 1e308 }'),
     "workload.clients.0.output_tokens.value", "<= 2147483647"),
    ("bare 1e308 tokens", DESIGN_EXAMPLE.replace('{ dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }', "1e308"),
     "workload.clients.0.output_tokens", "<= 2147483647"),
    ("empirical value of 1e308 tokens",
     DESIGN_EXAMPLE.replace('{ dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }',
                            '{ dist = "empirical", values = [10, 1e308] }'),
     "workload.clients.0.output_tokens.values", "< 2**31 tokens"),
    ("lognormal sigma 1e308", DESIGN_EXAMPLE.replace("sigma = 0.7", "sigma = 1e308"),
     "workload.clients.0.output_tokens.sigma", "<= 100"),
    ("gamma without cv", DESIGN_EXAMPLE.replace('"poisson", rate = 4.0', '"gamma", rate = 4.0'),
     "workload.clients.0.arrival.cv", "is required"),
    ("no arrival", DESIGN_EXAMPLE.replace('arrival = { process = "poisson", rate = 4.0 }', ""),
     "workload.clients.0.arrival", "is required"),
    ("branch_prob in chat", DESIGN_EXAMPLE.replace("conversation = {", "conversation = { branch_prob = 0.5,"),
     "workload.clients.0.conversation.branch_prob", "only applies to pattern = 'branch'"),
    ("too many turns", DESIGN_EXAMPLE.replace("min = 1, max = 8", "min = 1, max = 5000"),
     "workload.clients.0.conversation.turns", "<= 4096"),
    ("duplicate names", DESIGN_EXAMPLE + DESIGN_EXAMPLE, "workload.clients.1.name", "duplicate client name"),
    ("zero token constant", DESIGN_EXAMPLE.replace("system_prompt_tokens = 600", "system_prompt_tokens = -1"),
     "workload.clients.0.system_prompt_tokens", "must be >= 0"),
    ("token min 0", DESIGN_EXAMPLE.replace("mean = 220,", "mean = 220, min = 0,"),
     "workload.clients.0.output_tokens.min", "must be >= 1"),
    ("trace and clients", DESIGN_EXAMPLE + '[workload.trace]\npath = "x.csv"\n', "workload.trace", "not both"),
    ("trace missing", '[workload.trace]\npath = "missing.jsonl"\nformat = "mooncake"\n', "workload.trace.path",
     "not found"),
    ("bad format", '[workload.trace]\npath = "missing.jsonl"\nformat = "moon"\n', "workload.trace.format",
     "did you mean 'mooncake'"),
    ("zipf without max", DESIGN_EXAMPLE.replace('dist = "lognormal", mean = 220, sigma = 0.7, max = 2048',
                                                'dist = "zipf", exponent = 1.1'),
     "workload.clients.0.output_tokens.max", "is required for dist = 'zipf'"),
    ("popularity typo", DESIGN_EXAMPLE + 'system_prompt_popularity = "zip"\n',
     "workload.clients.0.system_prompt_popularity", "did you mean 'zipf'"),
    ("first_arrival typo", DESIGN_EXAMPLE.replace("rate = 4.0", 'rate = 4.0, first_arrival = "gaps"'),
     "workload.clients.0.arrival.first_arrival", "did you mean 'gap'"),
    ("think_from typo", DESIGN_EXAMPLE.replace("conversation = {", 'conversation = { think_from = "arival",'),
     "workload.clients.0.conversation.think_from", "did you mean 'arrival'"),
    ("empirical weights", DESIGN_EXAMPLE.replace('dist = "lognormal", mean = 220, sigma = 0.7, max = 2048',
                                                 'dist = "empirical", values = [1, 2], weights = [1]'),
     "workload.clients.0.output_tokens.weights", "2 non-negative numbers"),
]


@pytest.mark.parametrize("text, key, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_errors_name_key_and_reason(text, key, message):
    with pytest.raises(ScenarioError) as info:
        parse(text)
    assert info.value.key == key
    assert message in info.value.reason


@pytest.mark.parametrize("source", SOURCES)
def test_empirical_from_file(source, tmp_path):
    path, facts = trace_file(source, "AzureLLMInferenceTrace_code.csv")
    text = DESIGN_EXAMPLE.replace('dist = "lognormal", mean = 600, sigma = 0.9, max = 8192',
                                  f'dist = "empirical", path = "{path.name}", column = "ContextTokens"')
    spec = parse(text, path.parent)
    d = spec.clients[0].prompt_tokens
    assert d.data.shape == (facts["n"],) and d.upper_bound() == facts["max_prompt"]
    with pytest.raises(ScenarioError, match="did you mean 'ContextTokens'") as info:
        parse(text.replace('"ContextTokens"', '"ContextToken"'), path.parent)
    assert info.value.key == "workload.clients.0.prompt_tokens.path"


# -- distributions ---------------------------------------------------------------------------

def dist(text: str, integer: bool = True) -> DistSpec:
    raw = tomllib.loads(f"x = {text}")
    return parse_dist(Table(raw), "x", integer=integer, base_dir=Path("."))


N = 200_000


def draw(d: DistSpec, seed: int = 0, n: int = N) -> np.ndarray:
    return sample(d, np.random.default_rng(seed), n)


def assert_mean(x: np.ndarray, mean: float, sd: float) -> None:
    assert abs(x.mean() - mean) < 5 * sd / math.sqrt(x.size), (x.mean(), mean)


def test_constant_and_bare_number():
    assert (draw(dist("7")) == 7).all()
    assert (draw(dist('{ dist = "constant", value = 12, max = 10 }')) == 10).all()
    x = draw(dist("2.5", integer=False))
    assert x.dtype == np.float64 and (x == 2.5).all()


def test_uniform():
    x = draw(dist('{ dist = "uniform", min = 3, max = 9 }'))
    assert x.dtype == np.int32 and x.min() == 3 and x.max() == 9 and set(np.unique(x)) == set(range(3, 10))
    assert_mean(x, 6, math.sqrt((7 ** 2 - 1) / 12))
    y = draw(dist('{ dist = "uniform", min = 0.5, max = 1.5 }', integer=False))
    assert 0.5 <= y.min() and y.max() < 1.5 and y.dtype == np.float64
    assert_mean(y, 1.0, math.sqrt(1 / 12))


def test_normal():
    x = draw(dist('{ dist = "normal", mean = 500, std = 50 }'))
    assert_mean(x, 500, 50)
    clipped = draw(dist('{ dist = "normal", mean = 5, std = 50, min = 2, max = 40 }'))
    assert clipped.min() == 2 and clipped.max() == 40


def test_lognormal_mean_is_the_mean_of_x():
    x = draw(dist('{ dist = "lognormal", mean = 600, sigma = 0.9 }'))
    sd = 600 * math.sqrt(math.exp(0.81) - 1)
    assert_mean(x, 600, sd)
    m = draw(dist('{ dist = "lognormal", median = 300, sigma = 0.5 }'))
    assert abs(np.median(m) - 300) < 3
    c = draw(dist('{ dist = "lognormal", mean = 600, sigma = 0.9, min = 100, max = 700 }'))
    assert c.min() == 100 and c.max() == 700


def test_exponential_times():
    x = draw(dist('{ dist = "exponential", mean = 2.0 }', integer=False))
    assert x.min() >= 0
    assert_mean(x, 2.0, 2.0)


def test_zipf_bounded():
    x = draw(dist('{ dist = "zipf", exponent = 1.2, min = 2, max = 1000 }'))
    k = np.arange(2, 1001, dtype=float)
    p = k ** -1.2 / (k ** -1.2).sum()
    mean, sd = (k * p).sum(), math.sqrt(((k - (k * p).sum()) ** 2 * p).sum())
    assert x.min() == 2 and x.max() <= 1000
    assert_mean(x, mean, sd)
    assert abs((x == 2).mean() - p[0]) < 0.01


def test_empirical_inline_weights():
    x = draw(dist('{ dist = "empirical", values = [10, 20, 30], weights = [1, 0, 3] }'))
    assert set(np.unique(x)) == {10, 30}
    assert abs((x == 30).mean() - 0.75) < 0.01


def test_token_counts_are_at_least_one():
    x = draw(dist('{ dist = "normal", mean = 0, std = 3 }'))
    assert x.min() == 1
    t = draw(dist('{ dist = "normal", mean = 0, std = 3 }', integer=False))
    assert t.min() == 0.0


def test_draws_are_deterministic():
    d = dist('{ dist = "lognormal", mean = 600, sigma = 0.9, max = 8192 }')
    assert np.array_equal(draw(d, seed=5, n=1000), draw(d, seed=5, n=1000))
    assert not np.array_equal(draw(d, seed=5, n=1000), draw(d, seed=6, n=1000))


@pytest.mark.parametrize("process, cv", [("poisson", 1.0), ("gamma", 3.0), ("gamma", 0.5), ("constant", 0.0)])
def test_interarrival_gaps(process, cv):
    a = ArrivalSpec(process, 4.0, cv if process == "gamma" else None)
    g = interarrival_gaps(a, np.random.default_rng(1), N)
    assert_mean(g, 0.25, 0.25 * max(cv, 1e-9))
    if process != "constant":
        assert abs(g.std() / g.mean() - cv) < 0.05 * cv
    else:
        assert (g == 0.25).all()
