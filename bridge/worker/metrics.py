"""Prometheus metrics of the Celery workers that run :class:`~bridge.worker.task.RecordTask`
handlers.

Turned on by ``metrics.worker_port`` in the configuration, for an app that called
:func:`install` (the project's ``tasks`` app does). A prefork worker counts in its pool
processes, so the metrics use prometheus_client's multiprocess mode: at ``worker_init``, in the
worker's main process and before the pool forks, a fresh directory is made (or the one in
``PROMETHEUS_MULTIPROC_DIR`` is emptied of its ``*.db`` files), metrics created from then on
keep their values in per-process files there, and ONE HTTP server in the main process sums the
files of every process it has ever had (a replaced pool process's counts stay counted) for
``/metrics``. Nothing is counted twice: the main process runs no handler in a prefork pool.

prometheus_client picks its value class when it is first imported, from the environment; here
it is already imported (and other metrics may exist) by the time the worker starts. So the
switch replaces ``prometheus_client.values.ValueClass`` for the metrics created afterwards:
those created before (e.g. at import) keep in-process values and are not served here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import worker_init, worker_process_shutdown, worker_shutdown
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values

from bridge.errors import ConfigError
from bridge.metrics_server import MetricsServer
from bridge.settings import MetricsSettings
from bridge.worker import state as worker

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: handlers range from a millisecond to minutes.
DURATION_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip


class WorkerMetrics:
    """The handlers' metrics (created unregistered: the multiprocess collector serves them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.outcomes = Counter("bridge_worker_task_outcomes", "Handler tasks by how they ended: "
                                "success, retry, dead-lettered or parked (reason: exhausted, "
                                "non-retryable, undecodable), requeued, ignored, failed, stale "
                                "(an ordered copy dropped without running), or rejected "
                                "(reason: not-an-envelope, a foreign task message).",
                                ["task", "outcome", "reason"], registry=r)  # fmt: skip
        self.duration = Histogram("bridge_worker_handler_duration_seconds", "Time from a "
                                  "handler's start to its outcome, dead-lettering included "
                                  "(seconds).", ["task", "outcome"], buckets=DURATION_BUCKETS_S,
                                  registry=r)  # fmt: skip
        self.retries = Counter("bridge_worker_retries_scheduled", "Retries scheduled: as a "
                               "Celery countdown (via=\"countdown\"), waiting in Redis "
                               "(via=\"redis\"), or waiting in Redis to be gathered into a "
                               "batch (via=\"gathered\").", ["task", "via"],
                               registry=r)  # fmt: skip
        self.dead_letters = Counter("bridge_worker_dead_letter_writes", "Dead letters of "
                                    "workers: written to Kafka, deferred (kept in Redis for the "
                                    "bridge), refused (parked in Redis) or failed (kept nowhere: "
                                    "the task fails).", ["task", "reason", "result"],
                                    registry=r)  # fmt: skip


_metrics: WorkerMetrics | None = None


def outcome_of(exc: BaseException | None, gave_up: str | None) -> str:
    """How a handler run ended (pure): ``exc`` is what left the task, if anything;
    ``gave_up`` what the task did with a record that will not succeed, if it gave up."""
    if exc is None:
        return "success"
    if isinstance(exc, Retry):
        return "retry"
    if isinstance(exc, Reject):
        return "requeued"
    if isinstance(exc, Ignore):
        return "ignored"
    return gave_up or "failed"


class HandlerRun:
    """One run of a handler: :meth:`gave_up` notes what became of a record that will not
    succeed (``dead-lettered`` or ``parked``, and why)."""

    def __init__(self) -> None:
        self.gave_up_as: str | None = None
        self.reason = ""

    def gave_up(self, outcome: str, reason: str) -> None:
        """The record was dead-lettered or its key parked, for ``reason``."""
        self.gave_up_as, self.reason = outcome, reason


@contextlib.contextmanager
def handler_run(task: str) -> Iterator[HandlerRun]:
    """Time a handler run and count its outcome (nothing when metrics are off)."""
    run = HandlerRun()
    started = time.perf_counter()
    try:
        yield run
    except BaseException as exc:
        _count_run(task, outcome_of(exc, run.gave_up_as), run, started)
        raise
    _count_run(task, "success", run, started)


def _count_run(task: str, outcome: str, run: HandlerRun, started: float) -> None:
    if _metrics is None:
        return
    reason = run.reason if outcome == run.gave_up_as else ""
    _metrics.outcomes.labels(task, outcome, reason).inc()
    _metrics.duration.labels(task, outcome).observe(time.perf_counter() - started)


def records_succeeded(task: str, count: int) -> None:
    """``count`` records of a batch succeeded (each counted as a ``success`` outcome)."""
    if _metrics is not None and count:
        _metrics.outcomes.labels(task, "success", "").inc(count)


def stale_copy(task: str) -> None:
    """An ordered record's task was dropped without running (not its key's head)."""
    if _metrics is not None:
        _metrics.outcomes.labels(task, "stale", "").inc()


def foreign_message(task: str) -> None:
    """A task message whose argument is not a bridge record envelope was rejected."""
    if _metrics is not None:
        _metrics.outcomes.labels(task, "rejected", "not-an-envelope").inc()


def retry_scheduled(task: str, via: str) -> None:
    """A retry was scheduled ``via`` ``countdown``, ``redis`` or ``gathered``."""
    if _metrics is not None:
        _metrics.retries.labels(task, via).inc()


def dead_letter_written(task: str, reason: str, result: str) -> None:
    """A worker's dead letter was ``written``, ``deferred``, ``refused`` or ``failed``."""
    if _metrics is not None:
        _metrics.dead_letters.labels(task, reason, result).inc()


def install(app: Celery) -> None:
    """Serve worker metrics for ``app``'s workers when ``metrics.worker_port`` is set
    (read at worker start; Flower and other users of the app are left alone)."""

    def start(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            _start_worker_metrics()

    worker_init.connect(start, weak=False, dispatch_uid=f"bridge-worker-metrics-{id(app)}")


def _start_worker_metrics() -> None:
    conf = worker.settings().metrics
    if not conf.worker_port:
        return
    path, made = fresh_multiproc_dir(os.environ.get(MULTIPROC_ENV))
    enable_multiprocess(path)
    server = _serve(conf, path, made)

    def child_exit(pid: int | None = None, **_: Any) -> None:
        multiprocess.mark_process_dead(pid or os.getpid(), str(path))  # type: ignore[no-untyped-call]

    def stop(**_: Any) -> None:
        server.close()
        if made:
            shutil.rmtree(path, ignore_errors=True)

    worker_process_shutdown.connect(child_exit, weak=False, dispatch_uid="bridge-metrics-child")
    worker_shutdown.connect(stop, weak=False, dispatch_uid="bridge-metrics-stop")


def _serve(conf: MetricsSettings, path: Path, made: bool) -> MetricsServer:
    """One server for every process's values in ``path``; exits the worker if it cannot."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    try:
        return MetricsServer(conf.worker_port, conf.worker_addr, registry,
                             key="metrics.worker_port")  # fmt: skip
    except ConfigError as exc:
        if made:
            shutil.rmtree(path, ignore_errors=True)
        # Celery logs and swallows exceptions from signal handlers; this one must stop it.
        raise SystemExit(f"kafka-celery-bridge: {exc}") from None


def fresh_multiproc_dir(given: str | None) -> tuple[Path, bool]:
    """The worker's multiprocess directory: ``given`` emptied of earlier values (``*.db``),
    or a new temporary one. Returns it and whether it was made here (removed at shutdown)."""
    if not given:
        return Path(tempfile.mkdtemp(prefix="kafka-celery-bridge-metrics-")), True
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    return path, False


def enable_multiprocess(path: Path) -> WorkerMetrics:
    """Keep metric values in per-process files under ``path`` from now on (pool processes
    inherit it), and create the worker metrics there."""
    global _metrics
    os.environ[MULTIPROC_ENV] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _metrics = WorkerMetrics()
    log.info("worker metrics: per-process values in %s", path)
    return _metrics
