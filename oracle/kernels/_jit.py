"""The project's one jit decorator, and the on-disk cache of its compiled code.

* ``fastmath`` is always off, so results are bit-reproducible across runs and machines.
* Serial kernels are cached on disk unless ``ORACLE_NUMBA_CACHE=0``. Parallel kernels are
  never cached.
* ``NUMBA_DISABLE_JIT=1`` runs everything as plain Python (coverage, debugging).

Why the cache is keyed on the whole package
-------------------------------------------
Numba's own cache (``cache=True``) checks only the source file of the function it caches. A
compiled kernel carries the code of every function it calls, from whatever file, and the
values of the module-level constants it reads (numba freezes globals at compile time), so
after an edit or an upgrade that changes a callee's file but not the caller's, numba
silently loads the old code (doubling ``step_time_s`` in ``kernels/cost.py`` did not change
the cached engine in ``engine/loop.py``).

Here every cached kernel lives under one directory named after the package *fingerprint*
(:data:`FINGERPRINT`): a SHA-256 over the relative path and bytes of every ``.py`` file of
the ``oracle`` package, plus the package, Python, numba, llvmlite and NumPy versions and the
numba settings that change generated code. Any source change or upgrade therefore selects a
fresh, empty directory, whatever the call graph; compiled code of one fingerprint is never
loaded by another. The fingerprint is also the "source stamp" numba writes into each index
file and checks on load, a second guard. Module-level constants read inside kernels (field
indices in ``engine/cohort.py``, ``ITL_*`` in ``engine/inputs.py``, ...) are safe for the
same reason: they are package source. Nothing compiled may depend on a value from outside
the package source (an environment variable, a file, the machine): such a value must be a
kernel argument. (The target CPU is part of numba's own per-entry key.)

Where: ``$NUMBA_CACHE_DIR/oracle-<fingerprint>/`` when ``NUMBA_CACHE_DIR`` is set (sweep
workers inherit it), else ``$ORACLE_CACHE_DIR/numba/oracle-<fingerprint>/``, else
``${XDG_CACHE_HOME:-~/.cache}/llmperforacle/numba/oracle-<fingerprint>/``; one subfolder
per package folder (``engine/``, ``kernels/``). Every process of one package state (pytest,
``oracle simulate``, sweep workers) shares it. If it cannot be written, kernels compile in
every process (a warning says so). When a new fingerprint folder is created, older
``oracle-*`` folders beyond the :data:`KEEP` most recently used, and idle for an hour, are
deleted; the current one never is. Functions outside the package are not cached (the
fingerprint does not cover their files). The cache goes through numba's public cache
classes (``numba.core.caching``) for the oracle kernels only; numba's global configuration
and other libraries' caches are untouched.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
import warnings

import numba
from numba.core.dispatcher import Dispatcher

_CACHE = os.environ.get("ORACLE_NUMBA_CACHE", "1") not in ("0", "false", "no", "off")

#: The ``oracle`` package folder.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Fingerprint folders kept besides the current one (most recently used first).
KEEP = 8
_IDLE_S = 3600.0
_DIR_RE = re.compile(r"^oracle-[0-9a-f]{24}$")


def source_files(root: str = PACKAGE_ROOT) -> list[str]:
    """Every ``.py`` file under ``root`` (relative POSIX paths, sorted); ``__pycache__`` and
    hidden folders skipped."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "__pycache__" and not x.startswith(".")]
        rel = os.path.relpath(d, root)
        for f in files:
            if f.endswith(".py"):
                out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(out)


def _versions() -> tuple:
    import llvmlite
    import numpy
    import oracle
    cfg = numba.config
    return (getattr(oracle, "__version__", None), sys.version, sys.implementation.cache_tag,
            numba.__version__, llvmlite.__version__, numpy.__version__,
            tuple(getattr(cfg, k, None) for k in ("OPT", "BOUNDSCHECK", "DEBUGINFO_DEFAULT", "LOOP_VECTORIZE",
                                                   "SLP_VECTORIZE", "ENABLE_AVX", "CPU_NAME", "CPU_FEATURES")))


def fingerprint(root: str = PACKAGE_ROOT, versions: tuple | None = None) -> str | None:
    """The cache key of a package state: 24 hex digits of a SHA-256 over every ``.py`` file of
    ``root`` (relative path and bytes) and ``versions`` (default: the running ones).
    ``None`` when ``root`` holds no source (a zip or frozen install: then nothing is cached)."""
    files = source_files(root)
    if not files:
        return None
    h = hashlib.sha256()
    h.update(repr(_versions() if versions is None else versions).encode())
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        h.update(b"\0%s\0%d\0" % (rel.encode(), len(data)))
        h.update(data)
    return h.hexdigest()[:24]


def base_dir() -> str:
    """The folder holding the ``oracle-<fingerprint>`` cache folders."""
    d = os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR
    if d:
        return os.path.abspath(d)
    if os.environ.get("ORACLE_CACHE_DIR"):
        return os.path.abspath(os.path.join(os.environ["ORACLE_CACHE_DIR"], "numba"))
    xdg = os.environ.get("XDG_CACHE_HOME")
    if not (xdg and os.path.isabs(xdg)):
        xdg = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "llmperforacle", "numba")


def _prune(base: str, current: str) -> None:
    """Delete ``oracle-*`` folders of ``base`` beyond the KEEP most recently used, if idle."""
    try:
        entries = []
        for name in os.listdir(base):
            path = os.path.join(base, name)
            if _DIR_RE.match(name) and path != current and os.path.isdir(path):
                entries.append((os.stat(path).st_mtime, path))
    except OSError:
        return
    entries.sort(reverse=True)
    now = time.time()
    for mtime, path in entries[KEEP:]:
        if now - mtime > _IDLE_S:
            shutil.rmtree(path, ignore_errors=True)


def _open_cache_dir(fp: str | None) -> str | None:
    """Create (or reuse) this fingerprint's folder; ``None`` (no cache) if it cannot be written."""
    if fp is None:
        return None
    base = base_dir()
    path = os.path.join(base, f"oracle-{fp}")
    fresh = not os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        warnings.warn(f"oracle: cannot write the kernel cache folder {path} ({exc.strerror or exc}); "
                      "kernels compile in every process. Set NUMBA_CACHE_DIR to a writable folder, "
                      "or ORACLE_NUMBA_CACHE=0 to silence this.", RuntimeWarning, stacklevel=2)
        return None
    if fresh:
        _prune(base, path)
    else:
        try:
            os.utime(path)   # "recently used", for _prune
        except OSError:
            pass
    return path


try:
    from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator
except ImportError:  # pragma: no cover - a numba without these classes: no cache
    FunctionCache = None

_ENABLED = _CACHE and not numba.config.DISABLE_JIT and FunctionCache is not None
#: This package state's cache key (``None`` when caching is off or impossible).
FINGERPRINT: str | None = fingerprint() if _ENABLED else None
#: The folder this process loads and saves compiled kernels in (``None``: no cache).
CACHE_DIR: str | None = _open_cache_dir(FINGERPRINT) if _ENABLED else None


def _in_package(py_file: str) -> str | None:
    """``py_file``'s folder relative to the package (``"engine"``), or ``None`` if outside it."""
    try:
        rel = os.path.relpath(os.path.dirname(os.path.abspath(py_file)), PACKAGE_ROOT)
    except ValueError:   # pragma: no cover - another drive (Windows)
        return None
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return None
    return rel


if FunctionCache is not None:
    class _Locator(_CacheLocator):
        """Every oracle kernel: ``CACHE_DIR/<package subfolder>``, stamped with the fingerprint."""

        def __init__(self, py_func, py_file: str, rel: str):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._path = os.path.normpath(os.path.join(CACHE_DIR, rel))

        def get_cache_path(self):
            return self._path

        def get_source_stamp(self):
            return FINGERPRINT

        def get_disambiguator(self):
            return str(self._lineno)

    class _CacheImpl(CompileResultCacheImpl):
        """numba's compile-result cache with :class:`_Locator` as the only locator (it ignores
        ``NUMBA_CACHE_LOCATOR_CLASSES``, so the fingerprint folder is always used)."""

        def __init__(self, py_func):   # CacheImpl.__init__ without the search over locator classes
            source = inspect.getfile(py_func)
            self._lineno = py_func.__code__.co_firstlineno
            self._locator = _Locator(py_func, source, _in_package(source))
            qualname = getattr(py_func, "__qualname__", py_func.__name__)
            modname = os.path.splitext(os.path.basename(source))[0]
            self._filename_base = self.get_filename_base(f"{modname}.{qualname}", getattr(sys, "abiflags", ""))

    class _Cache(FunctionCache):
        """A cache that never fails a compile: an unreadable or unwritable entry is a miss."""

        _impl_class = _CacheImpl

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
                return None   # a vanished, truncated or foreign file: compile instead

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except OSError:
                pass


def _enable_cache(disp) -> None:
    """Attach the fingerprinted cache to a dispatcher (what ``cache=True`` does with numba's)."""
    if CACHE_DIR is None or not isinstance(disp, Dispatcher):
        return
    try:
        source = inspect.getfile(disp.py_func)
    except TypeError:   # pragma: no cover - no source file
        return
    if _in_package(source) is None:
        return
    disp._cache = _Cache(disp.py_func)


def jit(*args, parallel: bool = False, **kwargs):
    """``numba.njit`` with the project's settings; use as ``@jit``, ``@jit(**options)`` or
    ``@jit(signature)``. ``cache=False`` opts one function out of the on-disk cache."""
    cache = bool(kwargs.pop("cache", True)) and not parallel
    kwargs["fastmath"] = False
    kwargs["parallel"] = parallel
    kwargs.setdefault("nogil", True)
    if len(args) > 1:
        raise TypeError("jit takes at most one positional argument (a function or signature(s))")
    fn = sigs = None
    if args and inspect.isfunction(args[0]):
        fn = args[0]
    elif args:   # one signature or a list of them, as numba.njit takes
        sigs = args[0] if isinstance(args[0], list) else [args[0]]
    make = numba.njit(**kwargs)

    def decorate(func):
        disp = make(func)   # lazy: the cache is attached before anything compiles
        if not isinstance(disp, Dispatcher):
            return disp   # NUMBA_DISABLE_JIT=1: the Python function
        if cache:
            _enable_cache(disp)
        if sigs is not None:   # eager compilation, as numba.njit(signature) does
            from numba.core import typeinfer
            with typeinfer.register_dispatcher(disp):
                for sig in sigs:
                    disp.compile(sig)
                disp.disable_compile()
        return disp

    return decorate(fn) if fn is not None else decorate


def kernel(fn):
    """A small engine kernel that never allocates: a regular compiled function without
    reference counting (``_nrt=False``).

    Arrays reach it as borrowed references, so a call costs no atomic reference-count
    updates; an ``inline="always"`` function instead takes a new reference to each array
    argument on every call (measured: two atomic operations per array per call, which
    serialised the engine's per-block loops). LLVM still inlines it where that pays.
    """
    return jit(_nrt=False)(fn)
