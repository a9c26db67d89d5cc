"""Where sweep tasks run: in this process, in a local process pool, or on Ray.

Each executor is a generator ``(task, result)`` in completion order; a failing task raises
:class:`TaskFailed` (the remaining tasks are cancelled; finished ones were already yielded).

* ``serial``: in this process (``--workers 1``, or a single task).
* ``local``: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` context (never
  ``fork``: forking after numba/LLVM or polars started threads can deadlock). The initializer
  keeps every worker on one shared on-disk numba cache (``oracle.sweep.task.worker_env``) and
  limits each worker to one thread, so ``N`` workers use ``N`` cores.
* ``ray``: the same task function as Ray remote tasks (``ray.init(address=...)``, or a local
  ``ray.init()``). Ray is optional: ``pip install 'llmperforacle[ray]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from oracle.errors import OracleError, interrupted
from oracle.sweep.task import clear_workload_cache, init_worker, run_task, worker_env

EXECUTORS = ("local", "ray")


class TaskFailed(Exception):
    """A task raised; ``task`` is the SweepTask, ``error`` the original exception."""

    def __init__(self, task, error: BaseException) -> None:
        self.task = task
        self.error = error
        super().__init__(f"{type(error).__name__}: {error}")


def run_serial(tasks: Iterable) -> Iterator[tuple[Any, dict]]:
    try:
        for t in tasks:
            try:
                res = run_task(t)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - reported with the point
                if interrupted(exc):   # Ctrl-C inside a numba call arrives as a SystemError
                    raise KeyboardInterrupt from None
                raise TaskFailed(t, exc) from exc
            yield t, res
    finally:
        clear_workload_cache()


def run_local(tasks: list, *, workers: int) -> Iterator[tuple[Any, dict]]:
    """A spawn-context process pool of ``workers`` processes."""
    # lazy: oracle.cli exits an interrupted run through the interpreter (not os._exit) once
    # multiprocessing is imported, i.e. once a pool has started
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                               initargs=(worker_env(),))
    clean = False
    try:
        futures = {pool.submit(run_task, t): t for t in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                t = futures[f]
                exc = f.exception()
                if exc is not None:
                    raise TaskFailed(t, exc)
                yield t, f.result()
        clean = True
    finally:
        # Do not wait for idle workers to exit (numba/LLVM teardown takes a while); on an error
        # or interrupt also drop queued tasks and stop the running ones.
        # (shutdown() forgets the worker processes, so take them first)
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=not clean)
        if not clean:
            _terminate_pool(procs)


def _terminate_pool(procs) -> None:
    for p in procs:
        try:
            if p.is_alive():
                p.terminate()
        except Exception:  # noqa: BLE001 - best effort
            pass


def import_ray():
    try:
        import ray   # lazy: an optional dependency
    except ImportError:
        raise OracleError("the ray executor needs Ray: pip install 'llmperforacle[ray]'") from None
    return ray


def _ray_task(task) -> dict:
    """Ray entry point: set the worker environment on first use, then run the task."""
    if not os.environ.get("_ORACLE_SWEEP_WORKER"):
        init_worker(worker_env(), ignore_sigint=False)
        os.environ["_ORACLE_SWEEP_WORKER"] = "1"
    return run_task(task)


def run_ray(tasks: list, *, workers: int | None = None, address: str | None = None) -> Iterator[tuple[Any, dict]]:
    """Ray remote tasks (one CPU each). Starts (and stops) a local Ray unless one is running."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        env = worker_env()
        if address is None:
            # Local workers must import this very checkout (it may not be pip-installed).
            root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            kwargs: dict[str, Any] = {"num_cpus": workers or os.cpu_count() or 1, "include_dashboard": False}
        else:
            env.pop("NUMBA_CACHE_DIR", None)   # a driver path means nothing on cluster nodes
            kwargs = {"address": address}
        try:
            ray.init(runtime_env={"env_vars": env}, log_to_driver=False, logging_level="ERROR", **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise OracleError(f"cannot start or reach Ray{' at ' + address if address else ''}: {exc}") from None
        started = True
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    try:
        refs = {remote.remote(t): t for t in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                t = refs[ref]
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    raise TaskFailed(t, cause if isinstance(cause, BaseException) else exc) from None
                except ray.exceptions.RayError as exc:
                    raise TaskFailed(t, exc) from None
                yield t, res
    finally:
        if started:
            ray.shutdown()


def execute(tasks: list, *, executor: str = "local", workers: int | None = None,
            ray_address: str | None = None) -> Iterator[tuple[Any, dict]]:
    """Run ``tasks`` on the chosen executor; yields ``(task, result)`` as they complete."""
    if executor not in EXECUTORS:
        raise OracleError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        return run_ray(tasks, workers=workers, address=ray_address)
    if ray_address is not None:
        raise OracleError("--ray-address needs --executor ray")
    n = min(workers or os.cpu_count() or 1, len(tasks))
    if n <= 1:
        return run_serial(tasks)
    return run_local(tasks, workers=n)
