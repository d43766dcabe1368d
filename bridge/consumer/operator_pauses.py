"""Routes an operator paused (``python -m bridge pause``, the console): the bridge reads them
from Redis (:mod:`bridge.backends.redis.route_pauses`) at most every :data:`INTERVAL_S` and
pauses every partition of those topics, with the reason ``operator``, until ``resume``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from bridge.logs import at

log = logging.getLogger(__name__)

# A pause or resume takes effect within this long (plus one poll).
INTERVAL_S = 1.0

Read = Callable[[], dict[str, dict[str, Any]]]  # raises redis.RedisError


class OperatorPauses:
    """The routed topics an operator paused, as of the last read.

    :param read: reads the group's paused routes
        (:func:`bridge.backends.redis.route_pauses.paused`).
    :param topics: the routed topics (a pause of another topic is not this bridge's).
    """

    def __init__(self, read: Read, topics: Iterable[str], interval_s: float = INTERVAL_S) -> None:
        self._read, self._routed, self._interval_s = read, set(topics), interval_s
        self._due_s = 0.0
        self.paused: dict[str, dict[str, Any]] = {}

    def check(self, now_s: float) -> None:
        """Read the pauses if due, and log what changed.

        :raises redis.RedisError: Redis is unreachable (nothing changed; read again next time).
        """
        if now_s < self._due_s:
            return
        found = {t: e for t, e in self._read().items() if t in self._routed}
        self._due_s = now_s + self._interval_s
        for topic in sorted(set(found) - set(self.paused)):
            entry = found[topic]
            log.warning("route %s paused by %s at %s (%s): consumption paused until `python -m "
                        "bridge resume --topic %s`", topic, entry.get("by", "?"),
                        entry.get("at", "?"), entry.get("why") or "no reason given", topic,
                        extra=at(topic=topic))  # fmt: skip
        for topic in sorted(set(self.paused) - set(found)):
            log.warning("route %s resumed by an operator", topic, extra=at(topic=topic))
        self.paused = found

    def topics(self) -> set[str]:
        """The topics paused now."""
        return set(self.paused)
