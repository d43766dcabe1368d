"""Replaying dead letters: what to replay, where, and with which headers (pure).

:func:`plan` decides one dead letter, seen through its headers
(:class:`bridge.ops.replay_headers.DeadView`): replay it (with its new headers and count), or
skip it because the filters leave it out, because of the replay limit (a dead letter whose
``bridge-replays`` count has reached ``max_replays`` is not replayed again, so a record that
keeps failing stops coming back), or because it cannot be replayed (not a dead letter, or no
route to take it). The ``replay`` command's flags become a :class:`ReplayRequest` here
(:func:`build_filter`, :func:`select_dlt`), and a run's counts a :class:`Summary`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from bridge.errors import ReplayError
from bridge.ops.replay_headers import DeadView, Origin, replay_count, replayed_headers
from bridge.record import Headers, task_id
from bridge.routing import Route, Router

DEFAULT_MAX_REPLAYS = 3


def parse_time(text: str, flag: str) -> datetime:
    """An ISO 8601 time (``2026-11-22``, ``2026-11-22T10:00:00Z``…) as an aware datetime; a
    time without an offset is UTC.

    :raises ReplayError: not ISO 8601 (the message names ``flag``).
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"{flag}: {text!r} is not an ISO 8601 time "
                          "(e.g. 2026-11-22T10:00:00Z)") from None  # fmt: skip
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_key(text: str | None, b64: str | None) -> bytes | None:
    """The ``--key`` (UTF-8) or ``--key-b64`` filter as bytes (``None``: any key).

    :raises ReplayError: ``--key-b64`` is not base64.
    """
    if b64 is None:
        return None if text is None else text.encode()
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ReplayError(f"--key-b64: {b64!r} is not base64") from None


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which dead letters to replay; every given criterion must hold (``None``/empty: any).

    :param since: dead-lettered at or after (inclusive).
    :param until: dead-lettered before (exclusive).
    :param reasons: ``bridge-reason`` is one of these.
    :param exceptions: ``kafka_dlt-exception-fqcn`` is one of these, fully qualified
        (``builtins.TimeoutError``) or by class name (``TimeoutError``).
    :param key: the record key, exactly.
    """

    since: datetime | None = None
    until: datetime | None = None
    reasons: frozenset[str] = frozenset()
    exceptions: frozenset[str] = frozenset()
    key: bytes | None = None

    def matches(self, dead: DeadView) -> bool:
        """Whether ``dead`` passes every criterion."""
        if self.key is not None and dead.key != self.key:
            return False
        if self.reasons and dead.text("bridge-reason") not in self.reasons:
            return False
        if self.exceptions and not self._exception_matches(dead.text("kafka_dlt-exception-fqcn")):
            return False
        return self._time_matches(dead.dead_lettered_at())

    def _exception_matches(self, fqcn: str | None) -> bool:
        if fqcn is None:
            return False
        return fqcn in self.exceptions or fqcn.rsplit(".", 1)[-1] in self.exceptions

    def _time_matches(self, when: datetime | None) -> bool:
        if self.since is None and self.until is None:
            return True
        if when is None:
            return False
        return (self.since is None or when >= self.since) and (
            self.until is None or when < self.until
        )


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay and where (the ``replay`` command's flags).

    :param dlt_topic: the DLT to read (``None`` with ``parked``: every parked dead letter).
    :param replay_group: the consumer group keeping replay progress (default
        ``{group_id}.replay``).
    """

    dlt_topic: str | None
    to: Literal["source", "task"] = "source"
    filter: ReplayFilter = field(default_factory=ReplayFilter)
    max_replays: int = DEFAULT_MAX_REPLAYS
    dry_run: bool = False
    replay_group: str | None = None
    from_beginning: bool = False
    parked: bool = False


class Verdict(StrEnum):
    """What :func:`plan` decided for one dead letter."""

    REPLAY = "replay"
    FILTERED = "filtered"  # left out by the filters
    LIMITED = "limited"  # replayed max_replays times already
    UNREPLAYABLE = "unreplayable"  # not a dead letter, or no route to take it


@dataclass(frozen=True, slots=True)
class Decision:
    """One dead letter's fate; ``headers`` and ``replays`` are set for :attr:`Verdict.REPLAY`.

    ``replays`` is the count the replayed record carries (the dead letter's own plus one).
    """

    verdict: Verdict
    origin: Origin | None = None
    headers: Headers = ()
    replays: int = 0
    why: str = ""


def plan(dead: DeadView, flt: ReplayFilter, max_replays: int) -> Decision:
    """Decide whether to replay ``dead``, and with which headers.

    :param max_replays: a dead letter replayed this many times already is not replayed.
    """
    parts, origin = dead.split(), dead.origin()
    if parts is None or origin is None:
        return Decision(Verdict.UNREPLAYABLE, why="no kafka_dlt-original-* headers")
    if not flt.matches(dead):
        return Decision(Verdict.FILTERED, origin)
    original = parts[0]
    done = replay_count(original)
    if done >= max_replays:
        why = f"replayed {done} times already (--max-replays {max_replays})"
        return Decision(Verdict.LIMITED, origin, replays=done, why=why)
    return Decision(Verdict.REPLAY, origin, replayed_headers(original, done + 1), done + 1)


def replay_task_id(group_id: str, origin: Origin, replays: int) -> str:
    """The Celery task id of a record replayed into its task:
    ``{group_id}:{topic}:{partition}:{offset}:replay:{n}``.

    Not the original's deterministic id: that one is the exactly-once and ordered-gate
    identity of the first delivery, and ``n`` tells the replays of one record apart.
    """
    return f"{task_id(group_id, origin.topic, origin.partition, origin.offset)}:replay:{replays}"


def select_dlt(
    router: Router,
    topic: str | None,
    dlt_topic: str | None,
    *,
    parked: bool = False,
    to: str = "source",
) -> str | None:
    """The DLT to read: ``--dlt-topic``, else the DLT of the route of ``--topic`` (``None``:
    every parked dead letter, with ``--parked`` only).

    :raises ReplayError: neither flag without ``--parked``; ``--topic`` is not a routed
        topic; ``--to task`` for an ordered route.
    """
    if dlt_topic is None and topic is None and not parked:
        raise ReplayError("--topic or --dlt-topic: say which dead-letter topic to replay "
                          "(or --parked for the dead letters parked in Redis)")  # fmt: skip
    if topic is not None and topic not in router.topics:
        routed = ", ".join(router.topics) or "none"
        raise ReplayError(f"--topic: {topic!r} is not a routed topic (routes: {routed})")
    dlt = dlt_topic or (router.route_for(topic).dlt_topic if topic is not None else None)
    for route in router.routes if to == "task" else ():
        if route.ordered and (route.topic == topic or route.dlt_topic == dlt):
            raise ReplayError(f"--to task: route {route.topic} is ordered; its records run only "
                              "as their key's head: use --to source")  # fmt: skip
    return dlt


def build_filter(
    *,
    since: str | None = None,
    until: str | None = None,
    reasons: Iterable[str] = (),
    exceptions: Iterable[str] = (),
    key: str | None = None,
    key_b64: str | None = None,
) -> ReplayFilter:
    """The filter the flags ``--since``, ``--until``, ``--reason``, ``--exception``, ``--key``
    and ``--key-b64`` describe.

    :raises ReplayError: a bad time or key, or ``--since`` not before ``--until``.
    """
    start = None if since is None else parse_time(since, "--since")
    end = None if until is None else parse_time(until, "--until")
    if start is not None and end is not None and start >= end:
        raise ReplayError(f"--since/--until: {since} is not before {until}")
    return ReplayFilter(
        since=start,
        until=end,
        reasons=frozenset(reasons),
        exceptions=frozenset(exceptions),
        key=parse_key(key, key_b64),
    )


def task_route(router: Router, origin: Origin) -> Route | None:
    """The route that takes a record replayed ``--to task``: its original topic's, unless
    that route is ordered (an ordered record runs only as its key's head: replay it to its
    source topic instead) or missing."""
    try:
        route = router.route_for(origin.topic)
    except KeyError:
        return None
    return None if route.ordered else route


def describe(dead: DeadView, decision: Decision) -> dict[str, Any]:
    """A JSON-safe line for listings (``--dry-run``)."""
    origin = decision.origin
    key: dict[str, str | None] = {"key": None}
    if dead.key is not None:
        try:
            key = {"key": dead.key.decode("utf-8")}
        except UnicodeDecodeError:
            key = {"key_b64": base64.b64encode(dead.key).decode("ascii")}
    return {
        "topic": origin.topic if origin else None,
        "partition": origin.partition if origin else None,
        "offset": origin.offset if origin else None,
        **key,
        "reason": dead.text("bridge-reason"),
        "exception": dead.text("kafka_dlt-exception-fqcn"),
        "dead_lettered_at": dead.text("bridge-dead-lettered-at"),
        "replays": decision.replays,
    }


@dataclass(slots=True)
class Summary:
    """What a replay run did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    read: int = 0
    matched: int = 0
    replayed: int = 0
    already_replayed: int = 0  # enqueued by an interrupted run: not enqueued again
    skipped_by_filter: int = 0
    skipped_by_limit: int = 0
    unreplayable: int = 0
    parked_redriven: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)

    def count(self, decision: Decision) -> None:
        """Count one dead letter read and its verdict (``replayed`` is counted once done)."""
        self.read += 1
        if decision.verdict in (Verdict.REPLAY, Verdict.LIMITED):
            self.matched += 1
        if decision.verdict is Verdict.FILTERED:
            self.skipped_by_filter += 1
        elif decision.verdict is Verdict.LIMITED:
            self.skipped_by_limit += 1
        elif decision.verdict is Verdict.UNREPLAYABLE:
            self.unreplayable += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; the listing only for a dry run."""
        doc: dict[str, Any] = {
            name: getattr(self, name) for name in self.__slots__ if name != "listed"
        }
        if self.dry_run:
            doc["would_replay"] = self.listed
        return doc
