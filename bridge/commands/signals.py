"""Signals during a command: the first stops gracefully, a second exits at once (``run``,
``replay``)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

# The command line's logger: the lines a signal writes keep the name they always had.
log = logging.getLogger("bridge.cli")


class Stopper:
    """Signal handler: the first signal stops the bridge gracefully, a second exits at once.

    :param stop: asks the bridge to finish the batch in hand, commit and leave its group;
        :meth:`aim` changes it (signals are caught before the bridge exists).
    :param exit_now: ends the process without any cleanup (default ``os._exit``); nothing that
        was not accepted has been committed, so nothing is lost.
    """

    def __init__(self, stop: Callable[[], None], exit_now: Callable[[int], None] = os._exit):
        self._stop = stop
        self._exit_now = exit_now
        self.signalled = False

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        if self.signalled:
            log.warning("signal %d again: exiting at once", signum)
            self._exit_now(128 + signum)
            return
        self.signalled = True
        log.info("signal %d: finishing the batch in hand, committing, leaving the group", signum)
        self._stop()

    def aim(self, stop: Callable[[], None]) -> None:
        """Stop with ``stop`` from now on; at once if a signal came already."""
        self._stop = stop
        if self.signalled:
            stop()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT with this stopper."""
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)
