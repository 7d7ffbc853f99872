"""The process thread policy (charter.threads): numpy's BLAS on one thread once a runtime is open, the
settings' errors, and the per-worker torch thread count. Each case runs in a fresh interpreter, because the
policy is process-wide and applied once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charter.errors import UsageError
from charter.threads import blas_threads, torch_threads, worker_torch_threads

PROBE = """
import json, sys
from threadpoolctl import threadpool_info
import numpy
before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
from charter.runtime import Runtime
rt = Runtime.open(sys.argv[1])
rt.close()
after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after}))
"""


def _probe(project: Path, env: dict[str, str]) -> dict[str, list[int]]:
    run_env = {**os.environ, **env}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(project)], capture_output=True, text=True, env=run_env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_opening_a_runtime_limits_blas_to_one_thread(project: Path) -> None:
    env = {"OPENBLAS_NUM_THREADS": "", "OMP_NUM_THREADS": "", "CHARTER_BLAS_THREADS": ""}
    out = _probe(project, env)
    assert out["after"] and all(n == 1 for n in out["after"]), out
    if (os.cpu_count() or 1) > 1:  # the limit is Charter's doing, not the library's default
        assert any(n > 1 for n in out["before"]), out


def test_the_blas_setting_is_honoured(project: Path) -> None:
    out = _probe(project, {"CHARTER_BLAS_THREADS": "2"})
    assert out["after"] and all(n == 2 for n in out["after"]), out


@pytest.mark.parametrize("value", ["zero", "0", "-3", "1.5"])
def test_bad_settings_are_clear_errors(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CHARTER_BLAS_THREADS", value)
    with pytest.raises(UsageError, match="CHARTER_BLAS_THREADS"):
        blas_threads()
    monkeypatch.setenv("CHARTER_TORCH_THREADS", value)
    with pytest.raises(UsageError, match="CHARTER_TORCH_THREADS"):
        torch_threads()


def test_defaults_and_worker_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARTER_BLAS_THREADS", raising=False)
    monkeypatch.delenv("CHARTER_TORCH_THREADS", raising=False)
    assert blas_threads() == 1 and torch_threads() is None
    cores = os.cpu_count() or 1
    for workers in (1, 2, 3, cores, cores + 5):
        n = worker_torch_threads(workers)
        assert n >= 1 and (n * workers <= cores or n == 1)
