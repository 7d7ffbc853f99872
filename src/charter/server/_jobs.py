"""Work the API starts and runs in the background: an evaluation run and a launch-gate run.

:class:`JobRunner` runs one job of each kind at a time per server process, on a daemon thread with the
server's runtime; a second start while one runs raises :class:`~charter.errors.Conflict` (HTTP 409). A job's
record — id, kind, status (``running`` / ``succeeded`` / ``failed``), actor, times, progress, a summary
and an error message — is kept in memory and in the runtime state (``server.job.<id>``), so another worker
process of the same server can answer a status request too. A job interrupted by a shutdown stays
``running`` in the state.

What the jobs do is what the CLI does: :func:`eval_job` is ``charter eval`` (load the charter's eval sets,
``run_eval``, ``record_run``: store and audit ``evals.run``); :func:`gate_job` is ``charter gate --report DIR`` (run the
seven checks, write the signed report into :func:`reports_dir`, ``record_gate``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.errors import CharterException, Conflict, NotFound, UsageError
from charter.store import utcnow

if TYPE_CHECKING:
    from charter.evals import EvalCase
    from charter.runtime import Runtime

log = logging.getLogger("charter.server")
KINDS = ("eval", "gate")
_STATE = "server.job."
_KEEP = 200  # finished jobs remembered in memory


@dataclass
class Job:
    """One background run."""

    id: str
    kind: str
    actor: str
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    progress: dict[str, int] | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    pid: int = field(default_factory=os.getpid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "actor": self.actor,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "progress": self.progress,
            "summary": self.summary,
            "error": self.error,
        }


class JobRunner:
    """Starts jobs on daemon threads, one per kind at a time (per process), and remembers their outcome."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._running: dict[str, Job] = {}
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}

    def running(self, kind: str) -> Job | None:
        with self._lock:
            return self._running.get(kind)

    def ensure_free(self, kind: str) -> None:
        """Raise :class:`Conflict` (409) naming the running job if one of ``kind`` runs in this process."""
        with self._lock:
            self._ensure_free(kind)

    def _ensure_free(self, kind: str) -> None:
        busy = self._running.get(kind)
        if busy is not None:
            raise Conflict(
                f"a {kind} run is already running (job {busy.id}, started by {busy.actor} at "
                f"{busy.started_at.isoformat(timespec='seconds')}); wait for it to finish"
            )

    def start(self, kind: str, actor: str, work: Callable[[Job], dict[str, Any]]) -> Job:
        """Run ``work(job)`` in the background; its return value becomes the job's summary."""
        if kind not in KINDS:
            raise UsageError(f"unknown job kind {kind!r}")
        with self._lock:
            self._ensure_free(kind)
            job = Job(id=f"job_{kind}_{secrets.token_hex(8)}", kind=kind, actor=actor, started_at=utcnow())
            self._running[kind] = job
            self._jobs[job.id] = job
        self._persist(job)
        thread = threading.Thread(target=self._run, args=(job, work), name=f"charter-{kind}-job", daemon=True)
        self._threads[job.id] = thread
        thread.start()
        return job

    def _run(self, job: Job, work: Callable[[Job], dict[str, Any]]) -> None:
        try:
            job.summary = work(job)
            job.status = "succeeded"
        except CharterException as exc:
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        except Exception as exc:  # a job that crashes is reported as failed, never takes the server down
            log.exception("%s job %s failed", job.kind, job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            job.finished_at = utcnow()
            with self._lock:
                if self._running.get(job.kind) is job:
                    del self._running[job.kind]
                finished = [j for j in self._jobs.values() if j.status != "running"]
                for old in finished[: max(0, len(finished) - _KEEP)]:
                    self._jobs.pop(old.id, None)
                    self._threads.pop(old.id, None)
            self._persist(job)

    def _persist(self, job: Job) -> None:
        try:
            self.rt.set_state(_STATE + job.id, {**job.as_dict(), "pid": job.pid})
        except Exception:  # the in-memory record still answers in this process
            log.warning("could not store the record of job %s", job.id, exc_info=True)

    def get(self, job_id: str, kind: str | None = None) -> dict[str, Any]:
        """The job's record (this process's, else the one another worker stored); ``NotFound`` otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
        doc = job.as_dict() if job is not None else None
        if doc is None and job_id.startswith("job_"):
            stored = self.rt.get_state(_STATE + job_id)
            doc = stored if isinstance(stored, dict) else None
        if doc is None or (kind is not None and doc.get("kind") != kind):
            raise NotFound(f"no {kind + ' ' if kind else ''}job {job_id!r}")
        return doc

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job (of this process) has finished, or ``timeout`` passed; its record."""
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)


# --------------------------------------------------------------------------------------------- eval
def eval_cases(rt: Runtime, case_ids: Sequence[str] | None) -> tuple[list[str], list[EvalCase]]:
    """The charter's eval sets (as ``charter eval`` loads them), optionally only the cases ``case_ids``."""
    from charter.evals import load_eval_sets

    paths = [rt.charter.resolve(s) for s in rt.spec.evals.sets]
    cases = load_eval_sets(paths, users=set(rt.charter.principals))
    if case_ids:
        wanted = set(case_ids)
        unknown = sorted(wanted - {c.id for c in cases})
        if unknown:
            raise UsageError(
                f"{len(unknown)} unknown eval case ids: {', '.join(unknown[:5])}"
                + (" …" if len(unknown) > 5 else "")
            )
        cases = [c for c in cases if c.id in wanted]
    return [str(p) for p in paths], cases


def eval_job(
    rt: Runtime,
    actor: str,
    sets: list[str],
    cases: list[EvalCase],
    *,
    probes: bool,
    repeat: int,
    concurrency: int,
    timeout_s: float,
) -> Callable[[Job], dict[str, Any]]:
    """What ``charter eval [--permission-probes] --as ACTOR`` does, as a job."""

    def work(job: Job) -> dict[str, Any]:
        from charter.evals import record_run, run_eval

        def progress(done: int, total: int) -> None:
            job.progress = {"done": done, "total": total}

        run = run_eval(
            rt,
            cases,
            sets=sets,
            repeat=repeat,
            concurrency=concurrency,
            timeout_s=timeout_s,
            progress=progress,
            probes=probes,
            options={
                "concurrency": concurrency,
                "permission_probes": probes,
                "timeout_s": timeout_s,
                "model_option": None,
                "origin": "api",
                "job": job.id,
            },
        )
        record_run(rt, run, actor, job=job.id)
        s = run.summary()
        return {
            "run_id": run.id,
            "passed": run.passed,
            "cases": s["cases"],
            "categories": s["categories"],
            "fingerprint": run.charter_fingerprint,
            "thresholds": s["thresholds"],
            "failures": {k: len(v) for k, v in run.failures_by_category().items()},
            "duration_s": s["duration_s"],
        }

    return work


# --------------------------------------------------------------------------------------------- gate
def reports_dir(rt: Runtime) -> Path:
    """Where the server writes the signed reports of the gate runs it starts (one folder per run)."""
    return rt.key_dir.parent / "gate-reports"


def gate_job(rt: Runtime, actor: str) -> Callable[[Job], dict[str, Any]]:
    """What ``charter gate --report <reports_dir>/<run id> --as ACTOR`` does, as a job."""

    def work(job: Job) -> dict[str, Any]:
        from charter.gate import record_gate, run_gate, write_report

        result = run_gate(rt)
        folder = reports_dir(rt) / result.id
        manifest = write_report(rt, result, folder)
        record_gate(rt, result, actor=actor, report=folder, manifest=manifest)
        return {
            "gate_run": result.id,
            "status": result.status(),
            "failed": result.failed,
            "fingerprint": result.charter_fingerprint,
            "checks": {c.id: c.status for c in result.checks},
            "owners": {c.id: c.owner for c in result.checks if c.status != "pass"},
            "duration_s": round((result.finished_at - result.started_at).total_seconds(), 3),
        }

    return work
