"""The request table the engine consumes: struct-of-arrays + CSR content segments (DESIGN §3.1-3.2).

Row index = request id. Segments of request ``i`` are
``seg_key[seg_offsets[i]:seg_offsets[i+1]]`` / ``seg_len[...]`` and cover exactly
``prompt_tokens[i] + output_tokens[i]`` tokens, prompt first, then output::

    request i:  | sys (600) | user0 (412) | out0 (97) | user1 (51) | out1 (230) |
                |<----------- prompt_tokens = 1110 ---------->|<- output = 230 ->|

Token ``j`` of a segment is identified by ``(key, j)``; equal segment prefixes are equal
token prefixes, which is what makes prefix caching real. ``oracle.kernels.hashing``
turns the segments into block hashes for a block size.

Invariants (checked by :meth:`Workload.validate`): ``parent[i] < i`` (so any prefix
``[0, n)`` of the table is closed under parents), ``arrival_s`` is NaN exactly for
follow-ups (``parent >= 0``), the finite arrival times are non-decreasing in id order, and a
follow-up has its parent's session (a conversation's turns; or -1 for both: the next
request of a closed-loop user, see ``oracle.workload.closed_loop``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oracle.errors import TraceError
from oracle.metrics.writers import atomic_write

FORMAT_VERSION = "1"

# column -> dtype of the per-request arrays
COLUMNS: dict[str, np.dtype] = {
    "arrival_s": np.dtype(np.float64),      # seconds; NaN for follow-ups released by their parent
    "prompt_tokens": np.dtype(np.int32),    # >= 1 (includes system prompt and history)
    "output_tokens": np.dtype(np.int32),    # >= 1
    "session": np.dtype(np.int64),          # -1: not part of a conversation
    "turn": np.dtype(np.int32),             # 0 for the first or a lone request
    "parent": np.dtype(np.int64),           # -1, or the request whose completion releases this one
    "think_s": np.dtype(np.float64),        # delay after the parent's completion (0 if no parent)
    "client": np.dtype(np.int16),           # index into client_names
}
# Content keys: the top 4 bits say what kind of content a segment is, the low 60 bits which
# one (a request id, a trace hash id, a system-prompt pool/group). Distinct contents get
# distinct keys; a system prompt is the same content wherever it is used.
KIND_TOKEN = 0        # token-id traces: key = the token id itself (< 2**60)
KIND_USER = 1         # a user message (prompt part new in this request): low bits = request id
KIND_OUTPUT = 2       # a request's generated output: low bits = request id
KIND_TOOL = 3         # agent pattern: a tool output appended to the history: low bits = request id
KIND_SYSTEM = 4       # system prompt: low bits = (pool id (40 bits) << 20) | group
KIND_HASH_ID = 5      # Mooncake trace block: low bits = the trace's hash id


def content_keys(kind: int, ids: np.ndarray) -> np.ndarray:
    """Keys ``(kind << 60) | id`` for ids in ``[0, 2**60)`` (u8 array)."""
    ids = np.asarray(ids).astype(np.uint64)
    return ids | np.uint64(kind << 60)


SEGMENT_COLUMNS: dict[str, np.dtype] = {
    "seg_offsets": np.dtype(np.int64),      # [n + 1], CSR offsets into seg_key / seg_len
    "seg_key": np.dtype(np.uint64),         # content key of each segment
    "seg_len": np.dtype(np.int32),          # tokens in each segment (>= 1)
}


@dataclass(eq=False)
class Workload:
    """Requests as NumPy arrays (row = request id) plus their content segments.

    Array fields are converted to the dtypes in :data:`COLUMNS` / :data:`SEGMENT_COLUMNS`
    (contiguous). ``client_names[c]`` names client index ``c``; ``source`` says where the
    requests came from (generator settings or trace file).
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    session: np.ndarray
    turn: np.ndarray
    parent: np.ndarray
    think_s: np.ndarray
    client: np.ndarray
    seg_offsets: np.ndarray
    seg_key: np.ndarray
    seg_len: np.ndarray
    client_names: list[str] = field(default_factory=lambda: ["default"])
    source: str = ""

    def __post_init__(self) -> None:
        for name, dt in {**COLUMNS, **SEGMENT_COLUMNS}.items():
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dt))
        self.client_names = [str(c) for c in self.client_names]

    def __len__(self) -> int:
        return int(self.prompt_tokens.shape[0])

    @property
    def num_segments(self) -> int:
        return int(self.seg_key.shape[0])

    def total_tokens(self) -> np.ndarray:
        """prompt + output tokens per request, i8[n]."""
        return self.prompt_tokens.astype(np.int64) + self.output_tokens

    def block_hashes(self, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(hash_offsets, hashes)`` of all full blocks (see ``oracle.kernels.hashing``)."""
        from oracle.kernels.hashing import block_hashes   # lazy: numba (~0.4 s); validate imports this module
        return block_hashes(self.seg_offsets, self.seg_key, self.seg_len, block_size)

    # -- consistency -----------------------------------------------------------------------
    def validate(self) -> "Workload":
        """Raise ``ValueError`` naming the first inconsistency; return self when all is well."""
        n = len(self)
        for name, dt in COLUMNS.items():
            a = getattr(self, name)
            if a.ndim != 1 or a.shape[0] != n:
                raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
        off = self.seg_offsets
        if off.ndim != 1 or off.shape[0] != n + 1 or off[0] != 0:
            raise ValueError(f"seg_offsets must have shape ({n + 1},) and start at 0")
        if np.any(np.diff(off) < 1):
            raise ValueError(f"request {_first(np.diff(off) < 1)} has no segments")
        m = self.seg_key.shape[0]
        if self.seg_len.shape != (m,) or off[-1] != m:
            raise ValueError(f"seg_key and seg_len must have seg_offsets[-1] = {off[-1]} entries")
        if m and self.seg_len.min() < 1:
            raise ValueError(f"segment {_first(self.seg_len < 1)} has length < 1")
        _check_min(self.prompt_tokens, 1, "prompt_tokens")
        _check_min(self.output_tokens, 1, "output_tokens")
        csum = np.concatenate([[0], np.cumsum(self.seg_len, dtype=np.int64)])
        seg_tokens = csum[off[1:]] - csum[off[:-1]]
        bad = seg_tokens != self.total_tokens()
        if bad.any():
            i = _first(bad)
            raise ValueError(f"request {i}: segments cover {seg_tokens[i]} tokens, but prompt + output = "
                             f"{self.total_tokens()[i]}")
        ids = np.arange(n)
        follow = self.parent >= 0
        if np.any(self.parent < -1) or np.any(self.parent >= ids):
            raise ValueError(f"request {_first((self.parent < -1) | (self.parent >= ids))}: "
                             "parent must be -1 or a smaller request id")
        if np.any(np.isnan(self.arrival_s) != follow):
            raise ValueError(f"request {_first(np.isnan(self.arrival_s) != follow)}: arrival_s must be NaN "
                             "exactly for follow-ups (parent >= 0)")
        arr = self.arrival_s[~follow]
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0):
            raise ValueError("arrival times must be finite and >= 0")
        if np.any(np.diff(arr) < 0):
            raise ValueError("arrival times of requests without parent must be non-decreasing in id order")
        if not np.isfinite(self.think_s).all() or np.any(self.think_s < 0):
            raise ValueError("think_s must be finite and >= 0")
        if np.any(self.think_s[~follow] != 0):
            raise ValueError(f"request {_first((self.think_s != 0) & ~follow)}: think_s must be 0 without parent")
        if np.any(self.turn < 0) or np.any(self.session < -1):
            raise ValueError("turn must be >= 0 and session >= -1")
        if follow.any():
            p = self.parent[follow]
            if np.any(self.session[follow] != self.session[p]):   # -1 for both: a closed-loop chain
                raise ValueError("a follow-up must belong to its parent's session")
        if n and (self.client.min() < 0 or self.client.max() >= len(self.client_names)):
            raise ValueError(f"client indices must be in [0, {len(self.client_names)})")
        return self

    # -- subsets ---------------------------------------------------------------------------
    def slice(self, n: int) -> "Workload":
        """The first ``n`` requests (closed under parents, since parent < child)."""
        n = max(0, min(int(n), len(self)))
        cut = int(self.seg_offsets[n])
        return Workload(**{c: getattr(self, c)[:n] for c in COLUMNS},
                        seg_offsets=self.seg_offsets[:n + 1], seg_key=self.seg_key[:cut],
                        seg_len=self.seg_len[:cut], client_names=list(self.client_names),
                        source=self.source)

    limit = slice

    def take(self, keep: np.ndarray) -> "Workload":
        """Requests where the boolean mask ``keep`` is true, renumbered in order.

        The kept set must be closed under parents (a kept follow-up keeps its parent).
        """
        keep = np.asarray(keep, dtype=bool)
        p = self.parent
        if np.any(keep & (p >= 0) & ~keep[np.maximum(p, 0)]):
            raise ValueError("take(): a kept follow-up's parent is dropped")
        new_id = np.cumsum(keep) - 1
        cols = {c: getattr(self, c)[keep] for c in COLUMNS}
        cols["parent"] = np.where(cols["parent"] >= 0, new_id[np.maximum(cols["parent"], 0)], -1)
        counts = np.diff(self.seg_offsets)
        seg_keep = np.repeat(keep, counts)
        offsets = np.concatenate([[0], np.cumsum(counts[keep])])
        return Workload(**cols, seg_offsets=offsets, seg_key=self.seg_key[seg_keep],
                        seg_len=self.seg_len[seg_keep], client_names=list(self.client_names),
                        source=self.source)

    def with_descendants(self, keep_roots: np.ndarray) -> np.ndarray:
        """Mask: requests without parent where ``keep_roots`` holds, plus all their descendants."""
        root = self.parent < 0
        keep = np.asarray(keep_roots, dtype=bool) & root
        follow = np.flatnonzero(~root)
        while follow.size:  # one pass per depth level (parent < child)
            new = keep[self.parent[follow]] & ~keep[follow]
            if not new.any():
                break
            keep[follow[new]] = True
        return keep

    # -- files -----------------------------------------------------------------------------
    def to_parquet(self, path: str | Path) -> None:
        """Write the project's workload format (lossless; atomic: temp file, then rename)."""
        import pyarrow as pa   # lazy (also below): pyarrow (~0.2 s) only for workload files
        import pyarrow.parquet as pq

        off = pa.array(self.seg_offsets, pa.int64())
        cols = {c: pa.array(getattr(self, c)) for c in COLUMNS}
        cols["seg_key"] = pa.LargeListArray.from_arrays(off, pa.array(self.seg_key, pa.uint64()))
        cols["seg_len"] = pa.LargeListArray.from_arrays(off, pa.array(self.seg_len, pa.int32()))
        meta = {"oracle.workload.version": FORMAT_VERSION,
                "oracle.workload.client_names": json.dumps(self.client_names),
                "oracle.workload.source": self.source}
        table = pa.table(cols).replace_schema_metadata(meta)
        atomic_write(Path(path), lambda p: pq.write_table(table, p))

    @classmethod
    def from_parquet(cls, path: str | Path) -> "Workload":
        """Read a file written by :meth:`to_parquet`; raises ``TraceError`` naming the file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise TraceError("file not found", file=path)
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise TraceError(f"not a readable Parquet file ({exc})", file=path) from None
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if "oracle.workload.version" not in meta:
            raise TraceError("not an oracle workload file (no oracle.workload.version metadata; "
                             "write one with `oracle workload generate`)", file=path)
        missing = [c for c in [*COLUMNS, "seg_key", "seg_len"] if c not in table.column_names]
        if missing:
            raise TraceError(f"missing column(s): {', '.join(missing)}", file=path)
        cols = {c: table.column(c).to_numpy() for c in COLUMNS}
        lists = {}
        for c in ("seg_key", "seg_len"):
            arr = table.column(c).combine_chunks()
            if not pa.types.is_large_list(arr.type) and not pa.types.is_list(arr.type):
                raise TraceError(f"column {c} must be a list column", file=path)
            offs = arr.offsets.to_numpy().astype(np.int64)
            values = arr.values.to_numpy()[offs[0]:offs[-1]]
            lists[c] = (offs - offs[0], values)
        if not np.array_equal(lists["seg_key"][0], lists["seg_len"][0]):
            raise TraceError("seg_key and seg_len lists have different lengths", file=path)
        try:
            names = json.loads(meta.get("oracle.workload.client_names", '["default"]'))
            wl = cls(**cols, seg_offsets=lists["seg_key"][0], seg_key=lists["seg_key"][1],
                     seg_len=lists["seg_len"][1], client_names=names,
                     source=meta.get("oracle.workload.source", str(path)))
            return wl.validate()
        except (ValueError, TypeError) as exc:
            raise TraceError(f"inconsistent workload ({exc})", file=path) from None


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_min(a: np.ndarray, lo: int, name: str) -> None:
    if a.size and a.min() < lo:
        raise ValueError(f"request {_first(a < lo)}: {name} must be >= {lo}")
