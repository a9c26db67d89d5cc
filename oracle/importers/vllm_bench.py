"""``vllm bench serve`` arguments -> a scenario (vLLM 0.33.0, ``vllm/benchmarks/serve.py`` and
``vllm/benchmarks/datasets/``).

The command comes after ``--`` on the command line (``oracle simulate -- vllm bench serve
...``) or in a shell file (``.sh``, ``.txt``): continuation backslashes, comments, environment
assignments and other commands are allowed; a ``vllm serve MODEL ...`` line in the same file
sets the server (``[[frameworks]]``).

How the load is generated, and what it becomes:

==========================================  ====================================================================
``--num-prompts N`` (1000)                  N requests (``num_requests``)
``--seed S`` (0)                            the scenario seed (the draws differ from vLLM's: same laws, other
                                            numbers)
``--dataset-name random`` (the default)     prompt = ``--random-prefix-len`` tokens shared by every request
                                            (one system prompt) + ``U{floor(L(1-r)), ceil(L(1+r))}`` tokens with
                                            L = ``--random-input-len`` (1024), r = ``--random-range-ratio`` (0; a
                                            JSON ``{"input": .., "output": ..}`` sets both); output =
                                            ``U{max(1, floor(O(1-r))), ceil(O(1+r))}``, O = ``--random-output-len``
                                            (128): uniform integers, both ends included, exactly as vLLM draws them
``--dataset-name prefix_repetition``        ``--prefix-repetition-num-prefixes`` (10) shared prefixes of
                                            ``-prefix-len`` (256) tokens (system prompts, picked uniformly) +
                                            ``-suffix-len`` (256) own tokens; output ``-output-len`` (128).
                                            Approximated: vLLM gives each prefix exactly N / num_prefixes requests
``--dataset-name sharegpt``                 ``--dataset-path`` (the ShareGPT JSON): the first two turns of each
                                            conversation, lengths estimated at 4 characters per token (no
                                            tokenizer here), filtered as vLLM does (prompt 4..1024, total <= 2048),
                                            drawn as empirical prompt and output distributions; output fixed by
                                            ``--sharegpt-output-len``. Approximated (token counts, pairing)
``--request-rate inf`` (the default)        every request at t = 0: a closed-loop client of N users sending one
                                            request each
``--max-concurrency C`` with rate inf       a closed-loop client of C users sending N requests in all: each
                                            request starts when one in flight ends (vLLM's semaphore)
``--request-rate R``, ``--burstiness B``    open loop: gaps drawn from gamma(shape B, mean 1/R) (Poisson at B = 1,
                                            constant gaps at B = inf). Approximated: vLLM also rescales the gaps so
                                            that the last request is sent at exactly N/R
``--request-rate R`` + ``--max-concurrency``  not simulated: the cap (a client-side queue in front of an open
                                            arrival process) has no equivalent yet; requests are sent at the rate
``--goodput ttft:X tpot:Y e2el:Z``          ``[slo]``
``--metric-percentiles``                    ``[output] percentiles`` (the vllm_bench.json statistics)
``--ignore-eos``                            the simulated requests always produce their full output; without the
                                            flag a real server may stop earlier (a note says so)
==========================================  ====================================================================

Flags that change nothing in the simulated load (where to connect, where to save, labels,
sampling parameters, ``--num-warmups``) are listed in a note; any other flag is named as not
simulated, and a ramp-up (``--ramp-up-strategy``) or another dataset is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from pathlib import Path

from oracle.importers import APPROXIMATED, DEFAULT_GPU, NOT_SIMULATED, NOTE, Imported, ImportError_
from oracle.importers.common import catalog_model, open_loop_arrival, skeleton

TOOL = "vllm bench serve"
DATASETS = ("random", "prefix_repetition", "sharegpt")
#: flags that do not change the simulated load
NO_EFFECT = ("--host", "--port", "--base-url", "--endpoint", "--backend", "--label", "--save-result",
             "--save-detailed", "--append-result", "--result-dir", "--result-filename", "--metadata",
             "--disable-tqdm", "--trust-remote-code", "--tokenizer", "--tokenizer-mode", "--served-model-name",
             "--percentile-metrics", "--plot-timeline", "--plot-dataset-stats", "--timeline-itl-thresholds",
             "--ready-check-timeout-sec", "--header", "--profile", "--temperature", "--top-p", "--top-k",
             "--min-p", "--frequency-penalty", "--presence-penalty", "--repetition-penalty", "--logprobs",
             "--extra-body", "--num-warmups", "--no-stream", "--disable-shuffle", "--no-oversample",
             "--skip-chat-template", "--request-id-prefix", "--insecure")


def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm bench serve", add_help=False, allow_abbrev=False, exit_on_error=False)
    a = p.add_argument
    a("--model", default=None)
    a("--dataset-name", default="random")
    a("--dataset-path", default=None)
    a("--num-prompts", type=int, default=1000)
    a("--seed", type=int, default=0)
    a("--request-rate", type=float, default=math.inf)
    a("--burstiness", type=float, default=1.0)
    a("--max-concurrency", type=int, default=None)
    a("--random-input-len", type=int, default=1024)
    a("--random-output-len", type=int, default=128)
    a("--random-range-ratio", default="0.0")
    a("--random-prefix-len", type=int, default=0)
    a("--random-batch-size", type=int, default=1)
    a("--prefix-repetition-prefix-len", type=int, default=256)
    a("--prefix-repetition-suffix-len", type=int, default=256)
    a("--prefix-repetition-num-prefixes", type=int, default=10)
    a("--prefix-repetition-output-len", type=int, default=128)
    a("--sharegpt-output-len", type=int, default=None)
    a("--goodput", nargs="+", default=None)
    a("--metric-percentiles", default="99")
    a("--ignore-eos", action="store_true")
    a("--ramp-up-strategy", default=None)
    a("--ramp-up-start-rps", default=None)
    a("--ramp-up-end-rps", default=None)
    a("--probe-request-rate", type=float, default=0.0)
    for flag in NO_EFFECT:
        a(flag, nargs="?", const=True, default=None)
    return p


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", add_help=False, allow_abbrev=False, exit_on_error=False)
    a = p.add_argument
    a("model_pos", nargs="?", default=None)
    a("--model", default=None)
    a("--tensor-parallel-size", "-tp", type=int, default=None)
    a("--pipeline-parallel-size", "-pp", type=int, default=None)
    a("--data-parallel-size", "-dp", type=int, default=None)
    a("--max-num-seqs", type=int, default=None)
    a("--max-num-batched-tokens", type=int, default=None)
    a("--max-model-len", type=int, default=None)
    a("--gpu-memory-utilization", type=float, default=None)
    a("--block-size", type=int, default=None)
    a("--num-gpu-blocks-override", type=int, default=None)
    a("--kv-cache-dtype", default=None)
    a("--dtype", default=None)
    a("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    a("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=None)
    for flag in ("--host", "--port", "--served-model-name", "--api-key", "--trust-remote-code", "--seed",
                 "--disable-log-requests", "--disable-log-stats", "--uvicorn-log-level", "--tokenizer"):
        a(flag, nargs="?", const=True, default=None)
    return p


# -- reading the command ----------------------------------------------------------------------

def split_commands(text: str) -> list[list[str]]:
    """Shell words of each simple command in ``text`` (continuations joined, comments dropped,
    split at ``&&``, ``||``, ``;``, ``&``, ``|`` and newlines)."""
    text = re.sub(r"\\\r?\n", " ", text)
    out: list[list[str]] = []
    for line in text.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = "#"
        try:
            words = list(lex)
        except ValueError as exc:
            raise ImportError_(f"cannot read the shell line {line.strip()!r}: {exc}") from None
        cur: list[str] = []
        for w in words:
            if w and set(w) <= set(";&|"):
                if cur:
                    out.append(cur)
                cur = []
            else:
                cur.append(w)
        if cur:
            out.append(cur)
    return out


def _strip_env(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1
    if i < len(words) and words[i] == "env":
        return _strip_env(words[i + 1:])
    return words[i:]


def _find(commands: list[list[str]]) -> tuple[list[str] | None, list[str] | None]:
    """(bench args, serve args) of the first ``vllm bench serve`` and ``vllm serve`` commands."""
    bench = serve = None
    for words in commands:
        w = _strip_env(words)
        if len(w) >= 3 and w[0].endswith("vllm") and w[1:3] == ["bench", "serve"] and bench is None:
            bench = w[3:]
        elif len(w) >= 2 and w[0].endswith("vllm") and w[1] == "serve" and serve is None:
            serve = w[2:]
        elif len(w) >= 2 and w[0].startswith("python") and w[1].endswith("benchmark_serving.py") and bench is None:
            bench = w[2:]
    return bench, serve


def import_command_file(path: Path) -> Imported:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImportError_("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"cannot read: {exc}", file=path) from None
    try:
        bench, serve = _find(split_commands(text))
    except ImportError_ as exc:
        raise ImportError_(exc.reason, file=path) from None
    if bench is None:
        raise ImportError_("no `vllm bench serve` command in the file", file=path)
    return _convert(bench, serve, source=Path(path), name=Path(path).stem)


def import_command(words: list[str], *, source: Path | None = None) -> Imported:
    """``["vllm", "bench", "serve", "--model", ...]`` (the leading words optional)."""
    w = list(words)
    if w[:3] == ["vllm", "bench", "serve"]:
        w = w[3:]
    elif w[:2] == ["bench", "serve"]:
        w = w[2:]
    elif w and w[0] == "vllm":
        raise ImportError_(f"expected `vllm bench serve ...`, got `{' '.join(words[:3])}`")
    return _convert(w, None, source=source, name="vllm-bench")


# -- mapping -------------------------------------------------------------------------------------

def _parse(parser: argparse.ArgumentParser, args: list[str], what: str, source):
    try:
        ns, unknown = parser.parse_known_args(args)
    except (argparse.ArgumentError, ValueError) as exc:
        raise ImportError_(f"{what}: {exc}", file=source) from None
    return ns, unknown


def _convert(args: list[str], serve: list[str] | None, *, source: Path | None, name: str) -> Imported:
    ns, unknown = _parse(_bench_parser(), args, "vllm bench serve", source)
    serve_ns = None
    if serve is not None:
        serve_ns, serve_unknown = _parse(_serve_parser(), serve, "vllm serve", source)
    model_id = ns.model or (serve_ns and (serve_ns.model or serve_ns.model_pos))
    if not model_id:
        raise ImportError_("--model is required (the model to simulate)", file=source, key="--model")
    model = catalog_model(model_id, where="--model", file=source)
    raw = skeleton(re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "vllm-bench", model, seed=ns.seed,
                   gpu=DEFAULT_GPU)
    imp = Imported(tool=TOOL, source=source, raw=raw)
    if ns.num_prompts < 1:
        raise ImportError_(f"must be >= 1, got {ns.num_prompts}", file=source, key="--num-prompts")
    n = int(ns.num_prompts)
    client: dict = {"name": "bench"}
    _dataset(ns, client, imp, source)
    _traffic(ns, n, client, imp, source)
    raw["workload"]["clients"] = [client]
    raw["simulation"] = {"num_requests": n} if "concurrency" not in client else {}
    _goodput(ns, raw, imp, source)
    pcts = [float(p) for p in str(ns.metric_percentiles).split(",") if p.strip()]
    if any(not 0 < p <= 100 for p in pcts):
        raise ImportError_(f"percentiles must be in (0, 100], got {ns.metric_percentiles!r}", file=source,
                           key="--metric-percentiles")
    raw["output"] = {"percentiles": pcts}
    if not ns.ignore_eos:
        imp.note(NOTE, "--ignore-eos", "not given: a real server may stop a request at its end-of-sequence token; "
                 "the simulated requests always produce their full output length")
    imp.note(NOTE, "--model", f"{model_id!r} is the catalog model {model!r}", "model.name")
    if serve_ns is not None:
        _server(serve_ns, serve_unknown, raw, imp)
    else:
        imp.note(NOTE, "server", "the command does not say how the server runs: one replica, TP 1 and vLLM's "
                 "defaults (add a `vllm serve MODEL ...` line to the file, or edit [[frameworks]])", "frameworks.0")
    imp.note(NOTE, "GPU", f"the command does not name the GPU: {DEFAULT_GPU} assumed (edit [hardware].gpu)",
             "hardware.gpu")
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    ignored = sorted(given & set(NO_EFFECT))
    if ignored:
        imp.note(NOTE, ", ".join(ignored), "no effect on the simulated load")
    for flag in [u for u in unknown if u.startswith("-")]:
        imp.note(NOT_SIMULATED, flag.split("=", 1)[0], "not a flag this importer knows; ignored")
    return imp


def _range_ratios(text: str, source) -> tuple[float, float]:
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        raise ImportError_(f"must be a number or a JSON object, got {text!r}", file=source,
                           key="--random-range-ratio") from None
    if isinstance(v, dict):
        try:
            r_in, r_out = float(v["input"]), float(v["output"])
        except (KeyError, TypeError, ValueError):
            raise ImportError_("a JSON range ratio needs numbers 'input' and 'output'", file=source,
                               key="--random-range-ratio") from None
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        r_in = r_out = float(v)
    else:
        raise ImportError_(f"must be a number or a JSON object, got {text!r}", file=source, key="--random-range-ratio")
    for r in (r_in, r_out):
        if not 0.0 <= r < 1.0:
            raise ImportError_(f"values must be in [0, 1), got {r:g}", file=source, key="--random-range-ratio")
    return r_in, r_out


def uniform_lengths(mean: int, ratio: float, *, at_least_one: bool) -> dict | int:
    """vLLM ``get_sampling_params``: integers uniform on ``[floor(L(1-r)), ceil(L(1+r))]``."""
    lo, hi = math.floor(mean * (1 - ratio)), math.ceil(mean * (1 + ratio))
    if at_least_one:
        lo, hi = max(lo, 1), max(hi, 1)
    if lo == hi:
        return int(lo)
    return {"dist": "uniform", "min": int(lo), "max": int(hi)}


def _dataset(ns, client: dict, imp: Imported, source) -> None:
    ds = ns.dataset_name
    if ds not in DATASETS:
        raise ImportError_(f"dataset {ds!r} is not supported; supported: {', '.join(DATASETS)}", file=source,
                           key="--dataset-name")
    key = "workload.clients.0"
    if ds == "random":
        r_in, r_out = _range_ratios(str(ns.random_range_ratio), source)
        client["prompt_tokens"] = uniform_lengths(ns.random_input_len, r_in, at_least_one=True)
        client["output_tokens"] = uniform_lengths(ns.random_output_len, r_out, at_least_one=True)
        if ns.random_prefix_len > 0:
            client["system_prompt_tokens"] = int(ns.random_prefix_len)
            imp.note(NOTE, "--random-prefix-len", "one prefix shared by every request: a system prompt",
                     f"{key}.system_prompt_tokens")
        imp.note(NOTE, "--random-input-len", "vLLM subtracts the tokenizer's special tokens before drawing and "
                 "the server adds them back; this mapping assumes none (Llama tokenizers add one BOS token: "
                 "the simulated prompts are then within one token of the real ones)", f"{key}.prompt_tokens")
        if ns.random_batch_size != 1:
            imp.note(NOT_SIMULATED, "--random-batch-size", "batched (embedding/reranker) requests are not "
                     "simulated: every prompt is its own request")
    elif ds == "prefix_repetition":
        if ns.num_prompts < ns.prefix_repetition_num_prefixes:
            raise ImportError_("must be >= --prefix-repetition-num-prefixes (vLLM refuses it too)", file=source,
                               key="--num-prompts")
        client["prompt_tokens"] = int(ns.prefix_repetition_suffix_len)
        client["output_tokens"] = int(ns.prefix_repetition_output_len)
        client["system_prompt_tokens"] = int(ns.prefix_repetition_prefix_len)
        client["num_system_prompts"] = int(ns.prefix_repetition_num_prefixes)
        imp.note(APPROXIMATED, "--prefix-repetition-num-prefixes", "each request picks one of the prefixes "
                 "uniformly at random; vLLM gives every prefix exactly num_prompts / num_prefixes requests "
                 "(shuffled)", f"{key}.num_system_prompts")
    else:
        _sharegpt(ns, client, imp, source)


def _sharegpt(ns, client: dict, imp: Imported, source) -> None:
    if not ns.dataset_path:
        raise ImportError_("--dataset-name sharegpt needs --dataset-path (the ShareGPT JSON file)", file=source,
                           key="--dataset-path")
    path = Path(ns.dataset_path)
    if not path.is_absolute() and source is not None:
        path = source.parent / path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportError_(f"dataset file not found: {path}", file=source, key="--dataset-path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportError_(f"cannot read the ShareGPT file {path}: {exc}", file=source, key="--dataset-path") from None
    prompts, outputs = [], []
    for entry in data if isinstance(data, list) else []:
        conv = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(conv, list) or len(conv) < 2:
            continue
        p = max(1, round(len(str(conv[0].get("value", ""))) / 4))
        o = max(1, round(len(str(conv[1].get("value", ""))) / 4))
        if ns.sharegpt_output_len is not None:
            o = int(ns.sharegpt_output_len)
        fixed = ns.sharegpt_output_len is not None
        if p < 4 or (not fixed and o < 4) or p > 1024 or p + o > 2048:   # vLLM is_valid_sequence
            continue
        prompts.append(p)
        outputs.append(o)
    if not prompts:
        raise ImportError_(f"no usable conversation in {path}", file=source, key="--dataset-path")
    client["prompt_tokens"] = {"dist": "empirical", "values": prompts}
    client["output_tokens"] = (int(ns.sharegpt_output_len) if ns.sharegpt_output_len is not None
                               else {"dist": "empirical", "values": outputs})
    imp.note(APPROXIMATED, "--dataset-name sharegpt", f"{len(prompts)} conversations; token counts estimated at 4 "
             "characters per token (no tokenizer), prompt and output lengths drawn independently",
             "workload.clients.0.prompt_tokens")


def _traffic(ns, n: int, client: dict, imp: Imported, source) -> None:
    rate, burst, cap = float(ns.request_rate), float(ns.burstiness), ns.max_concurrency
    if ns.ramp_up_strategy:
        raise ImportError_("a request-rate ramp-up cannot be simulated (one arrival rate per client)", file=source,
                           key="--ramp-up-strategy")
    if not rate > 0:
        raise ImportError_(f"must be > 0 or inf, got {ns.request_rate}", file=source, key="--request-rate")
    if not burst > 0:
        raise ImportError_(f"must be > 0, got {ns.burstiness}", file=source, key="--burstiness")
    if cap is not None and cap < 1:
        raise ImportError_(f"must be >= 1, got {cap}", file=source, key="--max-concurrency")
    if ns.probe_request_rate > 0:
        imp.note(NOT_SIMULATED, "--probe-request-rate", "the probe requests are not simulated")
    key = "workload.clients.0"
    if math.isinf(rate):
        users = n if cap is None else min(cap, n)
        client["concurrency"] = int(users)
        client["num_requests"] = n
        if cap is None:
            imp.note(NOTE, "--request-rate inf", f"all {n} requests at t = 0: {n} users sending one request each",
                     f"{key}.concurrency")
        else:
            imp.note(NOTE, "--max-concurrency", f"{users} users, each sending its next request when the previous "
                     f"ends ({n} in all); the same load in distribution as vLLM's semaphore over the request list",
                     f"{key}.concurrency")
        return
    client["arrival"] = open_loop_arrival(rate, burstiness=burst)
    imp.note(APPROXIMATED, "--request-rate", "gamma gaps of shape --burstiness and mean 1/rate; vLLM also rescales "
             f"them so that the last of the {n} requests is sent at exactly {n / rate:.6g} s", f"{key}.arrival")
    if cap is not None and cap < n:
        imp.note(NOT_SIMULATED, "--max-concurrency", f"with a finite --request-rate the cap of {cap} requests in "
                 "flight (a client-side queue) has no equivalent yet: requests are sent at the rate; where the cap "
                 "would bind, the simulated latency is higher than the real run's", f"{key}.arrival")


def _goodput(ns, raw: dict, imp: Imported, source) -> None:
    if not ns.goodput:
        return
    slo = {}
    names = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2el": "e2e_ms"}
    for item in ns.goodput:
        k, _, v = item.partition(":")
        if k not in names:
            raise ImportError_(f"unknown SLO {k!r}; vLLM accepts ttft, tpot, e2el", file=source, key="--goodput")
        try:
            slo[names[k]] = float(v)
        except ValueError:
            raise ImportError_(f"{k}: must be a number of ms, got {v!r}", file=source, key="--goodput") from None
    raw["slo"] = slo


_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "half": "fp16", "fp16": "fp16"}


def _server(ns, unknown: list[str], raw: dict, imp: Imported) -> None:
    fw = raw["frameworks"][0]
    pairs = (("tensor_parallel_size", "tp"), ("pipeline_parallel_size", "pp"), ("data_parallel_size", "replicas"),
             ("max_num_seqs", "max_num_seqs"), ("max_num_batched_tokens", "max_num_batched_tokens"),
             ("max_model_len", "max_model_len"), ("gpu_memory_utilization", "gpu_memory_utilization"),
             ("block_size", "block_size"), ("num_gpu_blocks_override", "num_gpu_blocks"),
             ("enable_prefix_caching", "enable_prefix_caching"), ("enable_chunked_prefill", "enable_chunked_prefill"))
    for attr, key in pairs:
        v = getattr(ns, attr)
        if v is not None:
            fw[key] = v
    if ns.dtype and ns.dtype != "auto":
        if ns.dtype not in _DTYPES:
            imp.note(NOT_SIMULATED, "vllm serve --dtype", f"{ns.dtype!r}: bf16 assumed")
        else:
            fw["dtype"] = _DTYPES[ns.dtype]
    if ns.kv_cache_dtype and ns.kv_cache_dtype != "auto":
        fw["kv_cache_dtype"] = "fp8" if ns.kv_cache_dtype.startswith("fp8") else _DTYPES.get(ns.kv_cache_dtype, "auto")
    imp.note(NOTE, "vllm serve", "the server settings come from the `vllm serve` line", "frameworks.0")
    for flag in [u for u in unknown if u.startswith("-")]:
        imp.note(NOT_SIMULATED, f"vllm serve {flag.split('=', 1)[0]}", "a server flag this importer does not map")
