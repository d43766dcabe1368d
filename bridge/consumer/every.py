"""The thread each background duty of the bridge runs on (:mod:`bridge.consumer.duties`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bridge.backoff import exponential_ms

log = logging.getLogger(__name__)


class Every(threading.Thread):
    """A daemon thread that runs ``job`` every ``interval_s`` until :meth:`stop`.

    A failing job is logged, never allowed to end the thread: the first failure with its
    traceback, the next ones in a line each, and it is tried again after a delay that doubles
    from ``interval_s`` up to ``max(interval_s, 10 s)`` (a Redis outage does not make a
    100 ms duty log ten tracebacks a second).
    """

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self._interval_s = interval_s
        self._job = job
        self._stopped = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self._stopped.wait(self._delay_s(failures)):
            try:
                self._job()
            except Exception as exc:
                failures += 1
                self._failed(failures, exc)
                continue
            if failures:
                log.warning("%s works again after %d failed attempt(s)", self.name, failures)
            failures = 0

    def _delay_s(self, failures: int) -> float:
        if not failures:
            return self._interval_s
        initial_ms = max(1, int(self._interval_s * 1000))
        max_ms = max(initial_ms, _FAILING_MAX_DELAY_MS)
        return exponential_ms(failures, initial_ms=initial_ms, max_ms=max_ms) / 1000

    def _failed(self, failures: int, exc: Exception) -> None:
        delay_s = self._delay_s(failures)
        if failures == 1:
            log.exception("%s failed; trying again in %.3f s", self.name, delay_s)
        else:
            log.error("%s failed again (%d in a row); trying again in %.3f s: %r",
                      self.name, failures, delay_s, exc)  # fmt: skip

    def stop(self, timeout_s: float) -> None:
        """Stop after the job in hand; wait at most ``timeout_s`` for it."""
        self._stopped.set()
        if self.is_alive():
            self.join(timeout_s)


_FAILING_MAX_DELAY_MS = 10_000
