"""``oracle sweep --executor ray`` on a local Ray instance (skipped without the ``ray`` extra).

CI installs the extra: ``pip install -e '.[test,ray]'``.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from test_sweep import run_cli, write_base, write_sweep

ray = pytest.importorskip("ray")


def test_ray_executor_matches_local(tmp_path):
    from oracle.sweep.run import run_sweep
    write_base(tmp_path)
    f = write_sweep(tmp_path, 'repeats = 2\n[grid]\n"workload.clients.0.arrival.rate" = [3.0, 9.0]\n')
    r = run_cli("sweep", f, "--executor", "ray", "--workers", "2", "--out", tmp_path / "ray", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["executor"] == "ray" and doc["run"] == 4 and doc["rows"] == 4
    assert not ray.is_initialized()          # the local Ray we started is shut down again
    via_ray = pl.read_parquet(tmp_path / "ray" / "sweep.parquet").drop("wall_time_s")
    local = run_sweep(f, out_dir=tmp_path / "local", workers=1).table.drop("wall_time_s")
    for col in local.columns:
        assert via_ray[col].equals(local[col]), (col, via_ray[col].to_list(), local[col].to_list())


def test_ray_address_needs_ray_executor(tmp_path):
    write_base(tmp_path)
    f = write_sweep(tmp_path, "")
    r = run_cli("sweep", f, "--ray-address", "auto", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "--executor ray" in r.output, r.output


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    write_base(tmp_path)
    f = write_sweep(tmp_path, "")
    r = run_cli("sweep", f, "--executor", "ray", "--out", tmp_path / "o")
    assert r.exit_code == 1, r.output
    assert "pip install 'llmperforacle[ray]'" in r.output
