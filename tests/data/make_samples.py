"""Cut the bundled test samples in ``tests/data/samples/`` from the full files in ``../shared/data``.

    python tests/data/make_samples.py                      # ../shared/data -> tests/data/samples
    python tests/data/make_samples.py --shared DIR --out DIR

Standard library only, deterministic: the same inputs give byte-identical outputs
(``tests/test_samples.py`` checks that when ``../shared/data`` is present). Kept rows are copied
in file order with their values as written (CSV cells are not reparsed into numbers; JSONL lines
are copied verbatim). What each cut keeps, and why, is in ``tests/data/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "samples"

VIDUR = Path("calibration") / "vidur"
SLICE = Path("calibration_slice") / "vidur"
TRACES = Path("traces")

#: mlp.csv: the shape / key columns and the median of every op (min, max, mean, std dropped)
MLP_KEYS = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp", "num_tokens",
            "num_tensor_parallel_workers"]
MLP_MODEL = Path("meta-llama") / "Llama-2-7b-hf"
MLP_MAX_TOKENS = 512
MLP_EVERY = 32
ATTN_KEYS = ["is_prefill", "batch_size", "prefill_chunk_size", "kv_cache_size", "n_embd", "n_q_head", "n_kv_head",
             "num_tensor_parallel_workers"]
ATTN_COLUMNS = ["time_stats.attn_decode.median", "time_stats.attn_prefill.median", "n_embd", "n_q_head",
                "n_kv_head", "block_size", "num_tensor_parallel_workers", "max_model_len", "batch_size",
                "prefill_chunk_size", "kv_cache_size", "is_prefill"]
ATTN_EVERY = 40
NET_COLUMNS = ["time_stats.all_reduce.median", "num_workers", "size", "collective", "devices_per_node",
               "max_devices_per_node"]
NET_EVERY = 20
AZURE_ROWS = {"AzureLLMInferenceTrace_conv.csv": 600, "AzureLLMInferenceTrace_code.csv": 400}
MOONCAKE_SEED, MOONCAKE_BUDGET = 0, 100_000
SHAREGPT_CONVERSATIONS, SHAREGPT_SINGLES, SHAREGPT_BLOCK = 3, 6, 16


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _write_csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _key(row: dict, names: list[str]) -> tuple:
    return tuple(row[n] == "True" if row[n] in ("True", "False") else int(row[n]) for n in names)


def mlp_slice(shared: Path, device: str) -> str:
    """Llama-2-7B's rows with at most 512 tokens (every TP degree), op medians only."""
    header, rows = _read_csv(shared / VIDUR / device / MLP_MODEL / "mlp.csv")
    columns = [c for c in header if c.endswith(".median")] + MLP_KEYS
    return _write_csv(columns, [r for r in rows if int(r["num_tokens"]) <= MLP_MAX_TOKENS])


def mlp_spread(path: Path) -> str:
    """Every 32nd distinct (TP degree, tokens) of one profile (all repeated rows of a kept one),
    op medians only."""
    header, rows = _read_csv(path)
    columns = [c for c in header if c.endswith(".median")] + MLP_KEYS
    names = ["num_tensor_parallel_workers", "num_tokens"]
    keep = set(sorted({_key(r, names) for r in rows})[::MLP_EVERY])
    return _write_csv(columns, [r for r in rows if _key(r, names) in keep])


def attention(shared: Path) -> str:
    """Every 40th distinct shape in the loader's sort order (all repeated rows of a kept shape)."""
    _, rows = _read_csv(shared / VIDUR / "attention" / "a100_attention.csv")
    keep = set(sorted({_key(r, ATTN_KEYS) for r in rows})[::ATTN_EVERY])
    return _write_csv(ATTN_COLUMNS, [r for r in rows if _key(r, ATTN_KEYS) in keep])


def all_reduce(shared: Path) -> str:
    """Every 20th message size of each (num_workers, devices_per_node) group."""
    _, rows = _read_csv(shared / VIDUR / "network" / "a100_dgx" / "all_reduce.csv")
    sizes: dict[tuple, set] = collections.defaultdict(set)
    for r in rows:
        sizes[_key(r, ["num_workers", "devices_per_node"])].add(int(r["size"]))
    keep = {(*g, s) for g, ss in sizes.items() for s in sorted(ss)[::NET_EVERY]}
    return _write_csv(NET_COLUMNS, [r for r in rows if _key(r, ["num_workers", "devices_per_node", "size"]) in keep])


def azure(shared: Path, name: str) -> str:
    """The header and the first N requests, verbatim."""
    lines = (shared / TRACES / name).read_text().splitlines(keepends=True)
    return "".join(lines[:1 + AZURE_ROWS[name]])


def mooncake(shared: Path) -> str:
    """Whole prefix families (requests sharing their first hash id: hash ids are prefix-chained, so
    only these can share blocks), drawn in random order (seed 0) while they fit in 100 kB."""
    lines = (shared / TRACES / "synthetic_trace.jsonl").read_text().splitlines(keepends=True)
    family: dict[int, list[int]] = collections.defaultdict(list)
    for i, line in enumerate(lines):
        family[json.loads(line)["hash_ids"][0]].append(i)
    roots = sorted(family)
    random.Random(MOONCAKE_SEED).shuffle(roots)
    keep, size = [], 0
    for root in roots:
        n = sum(len(lines[i]) for i in family[root])
        if size + n <= MOONCAKE_BUDGET:
            keep += family[root]
            size += n
    return "".join(lines[i] for i in sorted(keep))


def sharegpt(shared: Path) -> str:
    """The 3 smallest conversations (requests sharing their first 16-token block) with more than
    one request, and the 6 smallest single requests, in file order."""
    lines = (shared / TRACES / "sharegpt-qwen3-32b-300-sps10.jsonl").read_text().splitlines(keepends=True)
    family: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, line in enumerate(lines):
        family[tuple(json.loads(line)["input_tok_ids"][:SHAREGPT_BLOCK])].append(i)

    def smallest(groups: list[list[int]], n: int) -> list[int]:
        groups = sorted(groups, key=lambda g: (sum(len(lines[i]) for i in g), g[0]))
        return [i for g in groups[:n] for i in g]

    keep = (smallest([g for g in family.values() if len(g) > 1], SHAREGPT_CONVERSATIONS)
            + smallest([g for g in family.values() if len(g) == 1], SHAREGPT_SINGLES))
    return "".join(lines[i] for i in sorted(keep))


def samples(shared: Path) -> dict[Path, str]:
    """Relative path -> contents of every sample."""
    out = {SLICE / dev / MLP_MODEL / "mlp.csv": mlp_slice(shared, dev) for dev in ("a100", "a40")}
    for dev in ("a100", "a40"):
        for f in sorted((shared / VIDUR / dev).glob("*/*/mlp.csv")):
            out[f.relative_to(shared)] = mlp_spread(f)
    out[VIDUR / "attention" / "a100_attention.csv"] = attention(shared)
    out[VIDUR / "network" / "a100_dgx" / "all_reduce.csv"] = all_reduce(shared)
    for name in AZURE_ROWS:
        out[TRACES / name] = azure(shared, name)
    out[TRACES / "synthetic_trace.jsonl"] = mooncake(shared)
    out[TRACES / "sharegpt-qwen3-32b-300-sps10.jsonl"] = sharegpt(shared)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default tests/data/samples)")
    args = parser.parse_args(argv)
    for rel, text in samples(args.shared).items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{len(text.encode()):>8} B  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
