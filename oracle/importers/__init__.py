"""Workloads from benchmark tools' configs: ``vllm bench serve`` arguments, GuideLLM benchmark
specs and inference-perf config files, turned into scenarios.

    oracle simulate -- vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --num-prompts 200 ...
    oracle simulate bench.sh                      # a file holding that command line
    oracle simulate guidellm.yaml                 # a GuideLLM scenario (benchmark spec)
    oracle simulate inference-perf-config.yml     # an inference-perf config
    oracle convert bench.sh -o scenario.toml      # the scenario, every mapping note as a comment

Each importer maps the tool's load exactly where the scenario format can express it, and
otherwise names the field in a note: *approximated* (mapped to the closest load this project
has) or *not simulated* (no effect on the simulated load, or no equivalent). Notes print as
``warning:`` lines on stderr when a config is simulated directly, and as comments in the TOML
that ``oracle convert`` writes. The mapping tables: ``oracle.importers.vllm_bench``,
``oracle.importers.guidellm`` and ``oracle.importers.inference_perf`` (and the README).

What the tools' files never say — the GPU, and the server's settings unless a ``vllm serve``
line is in the same script — takes this project's defaults (an H100 SXM, vLLM's defaults), and
a note says so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from oracle.errors import OracleError

DEFAULT_GPU = "h100-sxm"
APPROXIMATED = "approximated"
NOT_SIMULATED = "not simulated"
NOTE = "note"


class ImportError_(OracleError):   # noqa: N801 - "ImportError" is a builtin
    """A benchmark config that cannot be turned into a scenario (the reason says which field)."""


@dataclass
class Note:
    kind: str          # approximated | not simulated | note
    field: str         # the tool's own name for the setting (a flag, a YAML key path)
    text: str
    toml_key: str | None = None   # where the comment goes in the TOML (None: the header)

    def line(self) -> str:
        return f"{self.kind} [{self.field}]: {self.text}" if self.kind != NOTE else f"{self.field}: {self.text}"


@dataclass
class Imported:
    """A benchmark config turned into a scenario dict (the TOML structure) plus its notes."""

    tool: str
    source: Path | None
    raw: dict
    notes: list[Note] = field(default_factory=list)
    # several benchmarks (GuideLLM rates/streams lists, its `benchmarks` list): (label, scenario dict);
    # ``raw`` is the first. ``adaptive``: a GuideLLM sweep, whose rates come from simulated runs.
    benchmarks: list[tuple[str, dict]] = field(default_factory=list)
    adaptive: dict | None = None

    @property
    def several(self) -> bool:
        return len(self.benchmarks) > 1 or self.adaptive is not None

    def note(self, kind: str, field_: str, text: str, toml_key: str | None = None) -> None:
        self.notes.append(Note(kind, field_, text, toml_key))

    def warnings(self) -> list[Note]:
        return [n for n in self.notes if n.kind != NOTE]

    def to_toml(self) -> str:
        from oracle.legacy import toml_writer
        comments: dict[str, list[str]] = {}
        header_notes = []
        for n in self.notes:
            if n.toml_key and _has_key(self.raw, n.toml_key):
                comments.setdefault(n.toml_key, []).append(n.line())
            else:
                header_notes.append(n.line())
        src = self.source.name if self.source is not None else "the command line"
        header = [f"Converted from {src} ({'an' if self.tool[0].lower() in 'aeiou' else 'a'} {self.tool} config) by `oracle convert`.",
                  f"{sum(n.kind == APPROXIMATED for n in self.notes)} setting(s) approximated, "
                  f"{sum(n.kind == NOT_SIMULATED for n in self.notes)} not simulated: see the comments.", ""]
        if header_notes:
            header += header_notes + [""]
        return toml_writer.dumps(self.raw, comments=comments, header=header)

    def scenario(self):
        from oracle.scenario import scenario_from_dict
        base = self.source.parent if self.source is not None else Path.cwd()
        return scenario_from_dict(self.raw, base_dir=base, file=self.source)


def _has_key(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


# -- detection ------------------------------------------------------------------------------

COMMAND_SUFFIXES = (".sh", ".txt", ".cmd", ".bash")


def detect(path: Path) -> str | None:
    """Which tool's config ``path`` is: ``vllm-bench``, ``guidellm``, ``inference-perf`` or None
    (a scenario TOML, an original-LLMPerfOracle config, or something else)."""
    suffix = path.suffix.lower()
    if suffix in COMMAND_SUFFIXES:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return "vllm-bench"     # the importer reports the read error
        if "bench serve" not in text and "benchmark_serving" not in text:
            if "guidellm" in text:
                return "guidellm"
            if "inference-perf" in text:
                return "inference-perf"
        return "vllm-bench"
    if suffix in (".yaml", ".yml", ".json") and path.is_file():
        from oracle.importers.common import read_mapping
        try:
            doc = read_mapping(path)
        except OracleError:
            return None
        if not isinstance(doc, dict):
            return None
        from oracle.importers.guidellm import looks_like_guidellm
        from oracle.importers.inference_perf import looks_like_inference_perf
        if looks_like_inference_perf(doc):
            return "inference-perf"
        if looks_like_guidellm(doc):
            return "guidellm"
    return None


def import_file(path: str | Path, kind: str | None = None) -> Imported:
    """Read a benchmark config file (``kind`` as :func:`detect`; default: detected)."""
    path = Path(path)
    kind = kind or detect(path)
    if kind == "vllm-bench":
        from oracle.importers.vllm_bench import import_command_file
        return import_command_file(path)
    if kind == "guidellm":
        from oracle.importers.guidellm import import_guidellm, import_guidellm_command
        if path.suffix.lower() in COMMAND_SUFFIXES:
            return import_guidellm_command(_first_command(path, "guidellm"), source=path)
        return import_guidellm(path)
    if kind == "inference-perf":
        from oracle.importers.inference_perf import import_inference_perf, import_inference_perf_command
        if path.suffix.lower() in COMMAND_SUFFIXES:
            words = _first_command(path, "inference-perf")
            return import_inference_perf_command(words, source=path)
        return import_inference_perf(path)
    raise ImportError_("not a vllm bench serve command, GuideLLM spec or inference-perf config", file=path)


def _first_command(path: Path, program: str) -> list[str]:
    from oracle.importers.vllm_bench import _strip_env, split_commands
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"cannot read: {exc}", file=path) from None
    for words in split_commands(text):
        w = _strip_env(words)
        if w and w[0].endswith(program):
            return w
    raise ImportError_(f"no `{program}` command in the file", file=path)


def import_args(args: list[str]) -> Imported:
    """``["vllm", "bench", "serve", ...]`` or ``["guidellm", "run", ...]`` given after ``--``."""
    if args and args[0] == "guidellm":
        from oracle.importers.guidellm import import_guidellm_command
        return import_guidellm_command(list(args), source=None)
    if args and args[0] == "inference-perf":
        from oracle.importers.inference_perf import import_inference_perf_command
        return import_inference_perf_command(list(args), source=None)
    from oracle.importers.vllm_bench import import_command
    return import_command(list(args), source=None)


def is_command(args: list[str]) -> bool:
    """Words that :func:`import_args` takes."""
    return args[:3] == ["vllm", "bench", "serve"] or (bool(args) and args[0] in ("guidellm", "inference-perf"))


def load_imported(imp: Imported, *, notice: bool = True):
    """Validate the scenario; with ``notice``, print the warnings to stderr first."""
    if notice:
        src = str(imp.source) if imp.source is not None else imp.tool
        for n in imp.warnings():
            print(f"warning: {src}: {n.line()}", file=sys.stderr)
        article = "an" if imp.tool[0].lower() in "aeiou" else "a"
        what = f"{src} is {article} {imp.tool} config" if imp.source is not None else f"the {imp.tool} command"
        print(f"note: {what}; converted in memory (`oracle convert` shows the scenario)", file=sys.stderr)
    return imp.scenario()
