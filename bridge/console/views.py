"""What the console's pages show (pure): dead-letter rows and a record's page from DLT records,
the dead-letter filters from a query string, and the partition states of the status document.

A dead letter is read through :class:`bridge.ops.replay_headers.DeadView`, and filtered with
replay's own :class:`bridge.ops.replay_plan.ReplayFilter` (what the page shows is what
``replay`` with the same flags would pick), plus a text search over the exception message and
the value.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.deadletter import iso_ms
from bridge.errors import ReplayError
from bridge.ops.replay_headers import DeadView
from bridge.ops.replay_plan import DEFAULT_MAX_REPLAYS, ReplayFilter, build_filter, plan

# Spring's binary headers (big-endian): everything else a dead letter carries is UTF-8.
BINARY_HEADERS = {
    "kafka_dlt-original-partition": ">i",
    "kafka_dlt-original-offset": ">q",
    "kafka_dlt-original-timestamp": ">q",
}
SHOWN_BYTES = 64 * 1024  # a value or header longer than this is cut on the page
FILTER_FIELDS = ("since", "until", "reason", "exception", "key", "text")


@dataclass(frozen=True, slots=True)
class Letter:
    """One DLT record as the console reads it (no Kafka types)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]

    @property
    def view(self) -> DeadView:
        """The record seen as replay sees it."""
        return DeadView(self.headers, self.key, self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """The dead-letter page's filters: replay's, and ``text`` in the message or the value."""

    replay: ReplayFilter = field(default_factory=ReplayFilter)
    text: str = ""
    given: Mapping[str, str] = field(default_factory=dict)  # as typed, to show them again

    def matches(self, letter: Letter) -> bool:
        """Whether ``letter`` passes every filter."""
        if not self.replay.matches(letter.view):
            return False
        if not self.text:
            return True
        needle = self.text.casefold()
        message = letter.view.text("kafka_dlt-exception-message") or ""
        return needle in message.casefold() or needle in _text(letter.value).casefold()

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(self.given.values())


def parse_filter(query: Mapping[str, str]) -> LetterFilter:
    """The filters of a query string (``since``, ``until``: ISO 8601; ``reason``;
    ``exception``: fully qualified or a class name; ``key``: UTF-8, exactly; ``text``).

    :raises ReplayError: a bad time, or ``since`` not before ``until`` (the message names the
        field as replay's flag).
    """
    given = {name: (query.get(name) or "").strip() for name in FILTER_FIELDS}
    try:
        replay = build_filter(
            since=given["since"] or None,
            until=given["until"] or None,
            reasons=[given["reason"]] if given["reason"] else [],
            exceptions=[given["exception"]] if given["exception"] else [],
            key=given["key"] or None,
        )
    except ReplayError as exc:
        raise ReplayError(str(exc).replace("--", "")) from None
    return LetterFilter(replay, given["text"], given)


def row(letter: Letter) -> dict[str, Any]:
    """A line of the dead-letter list."""
    view = letter.view
    origin = view.origin()
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "key": shown_key(letter.key),
        "reason": view.text("bridge-reason") or "-",
        "exception": view.text("kafka_dlt-exception-fqcn") or "-",
        "message": _cut(view.text("kafka_dlt-exception-message") or "", 160),
        "dead_lettered_at": view.text("bridge-dead-lettered-at") or iso_ms(letter.timestamp_ms),
        "origin": f"{origin.topic}[{origin.partition}]@{origin.offset}" if origin else "-",
    }


def detail(letter: Letter) -> dict[str, Any]:
    """A record's page: key, value, every header decoded, and the stack trace."""
    view = letter.view
    return {
        **row(letter),
        "timestamp": iso_ms(letter.timestamp_ms),
        "value": shown_value(letter.value),
        "headers": [header(name, value) for name, value in letter.headers],
        "stacktrace": view.text("kafka_dlt-exception-stacktrace") or "",
        "full_message": view.text("kafka_dlt-exception-message") or "",
    }


def header(name: str, value: bytes | None) -> dict[str, str]:
    """A header as shown: Spring's binary numbers as numbers, UTF-8 as text, else hex."""
    if value is None:
        return {"name": name, "value": "(null)", "kind": "null"}
    fmt = BINARY_HEADERS.get(name)
    if fmt is not None and len(value) == struct.calcsize(fmt):
        return {"name": name, "value": str(struct.unpack(fmt, value)[0]), "kind": "number"}
    try:
        return {"name": name, "value": _cut(value.decode("utf-8"), SHOWN_BYTES), "kind": "text"}
    except UnicodeDecodeError:
        return {"name": name, "value": _hex(value), "kind": "hex"}


def shown_key(key: bytes | None) -> str:
    """A key as text, or ``hex:…`` when it is not UTF-8, or ``(none)``."""
    if key is None:
        return "(none)"
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + key.hex()


def shown_value(value: bytes | None) -> dict[str, str]:
    """A value as shown: pretty JSON, UTF-8 text, or hex (``kind`` says which)."""
    if value is None:
        return {"kind": "null", "text": "(null)"}
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return {"kind": "hex", "text": _hex(value)}
    try:
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return {"kind": "text", "text": _cut(text, SHOWN_BYTES)}
    return {"kind": "json", "text": _cut(pretty, SHOWN_BYTES)}


def partition_state(p: Mapping[str, Any]) -> tuple[str, str]:
    """A partition's state in the status document, as ``(label, css class)``."""
    if p.get("owner") is None:
        return "no bridge", "dim"
    if p.get("paused") is not None:
        return f"paused: {p['paused']}", "warn"
    return "consuming", "ok"


def _text(value: bytes | None) -> str:
    return "" if value is None else value[:SHOWN_BYTES].decode("utf-8", "replace")


def _hex(value: bytes) -> str:
    shown = value[:SHOWN_BYTES].hex(" ")
    return shown if len(value) <= SHOWN_BYTES else f"{shown} … ({len(value)} bytes)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def resume_effect(doc: Mapping[str, Any], topic: str, breaker_on: bool) -> dict[str, Any]:
    """What resuming route ``topic`` would do, from the status document (the dry run): the
    operator's pause it lifts, its breaker, the partitions either paused, and sentences saying
    so."""
    route = _route_of(doc, topic)
    partitions = route["partitions"] if route else []
    paused = [p["partition"] for p in partitions if p.get("paused") == "dead-letter-flood"]
    stopped = [p["partition"] for p in partitions if p.get("paused") == "operator"]
    pause = (route or {}).get("paused_by_operator")
    breaker = (route or {}).get("breaker")
    state = breaker["state"] if breaker else None
    lines = [] if pause is None else [_lifted(pause, len(stopped))]
    if not breaker_on:
        lines += [] if pause else [_NOTHING_TO_RESUME]
    elif state is None:
        lines.append("No bridge reports this route's breaker: the request waits for one to start.")
    elif state == "closed":
        lines.append("The breaker is closed: no partition is paused by it.")
    else:
        lines.append(f"The breaker is {state}: every bridge closes it within "
                     f"breaker.check_interval_ms, and {len(paused)} partition(s) it paused "
                     "consume again.")  # fmt: skip
    return {"topic": topic, "breaker": state, "paused": paused, "operator": pause,
            "count": len(paused) + len(stopped), "summary": " ".join(lines),
            "possible": breaker_on or pause is not None}  # fmt: skip


_NOTHING_TO_RESUME = ("Not paused by an operator, and the flood breaker is off "
                      "(breaker.dead_letter_ratio unset): nothing to resume.")  # fmt: skip


def _lifted(pause: Mapping[str, Any], partitions: int) -> str:
    return (f"Paused by {pause.get('by', '?')} at {pause.get('at', '?')} "
            f"({pause.get('why') or 'no reason given'}): the pause is lifted, and every bridge "
            f"consumes the route again within a second ({partitions} partition(s) now paused "
            "by it).")  # fmt: skip


def pause_effect(doc: Mapping[str, Any], topic: str) -> dict[str, Any]:
    """What pausing route ``topic`` would do, from the status document (the dry run)."""
    route = _route_of(doc, topic) or {}
    partitions = route.get("partitions") or []
    pause = route.get("paused_by_operator")
    if pause is not None:
        summary = (f"Already paused by {pause.get('by', '?')} at {pause.get('at', '?')} "
                   f"({pause.get('why') or 'no reason given'}): nothing changes.")  # fmt: skip
    else:
        summary = (f"Every bridge of group {doc.get('group_id')} stops consuming its "
                   f"{len(partitions)} partition(s) within a second, and its lag "
                   f"({route.get('lag', '-')} now) grows until it is resumed. What is already "
                   f"in Celery goes on: {route.get('queue_depth', '-')} queued task(s), delayed "
                   "retries, ordered keys' next records.")  # fmt: skip
    return {"topic": topic, "count": len(partitions), "summary": summary,
            "already": pause is not None}  # fmt: skip


def _route_of(doc: Mapping[str, Any], topic: str) -> Mapping[str, Any] | None:
    return next((r for r in doc.get("routes") or () if r["topic"] == topic), None)


def audit_entry(
    at: str, who: str, action: str, target: str, count: int, outcome: str
) -> dict[str, Any]:
    """One line of the audit log: when, who, what, on what, how many, and what came of it."""
    return {"at": at, "who": who, "action": action, "target": target, "count": count,
            "outcome": outcome}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ParkedKey:
    """A parked key of an ordered route, as a form or a link names it: ``key`` (bytes), or
    ``None`` for the keyless records of ``partition``."""

    topic: str
    key: bytes | None
    partition: int

    @classmethod
    def of(cls, query: Mapping[str, str]) -> ParkedKey:
        """From ``topic`` and ``key`` (UTF-8), ``key_b64`` or ``partition`` (keyless).

        :raises ValueError: ``key_b64`` is not base64, or ``partition`` not a number.
        """
        b64 = query.get("key_b64")
        key = base64.b64decode(b64, validate=True) if b64 else None
        if key is None and query.get("key"):
            key = query["key"].encode()
        return cls(query.get("topic", ""), key, int(query.get("partition") or 0))

    @classmethod
    def of_state(cls, state: Mapping[str, Any]) -> ParkedKey:
        """The key of ``state`` (an entry of ``ordered.keys_parked``)."""
        if state.get("key_b64"):
            return cls(state["topic"], base64.b64decode(state["key_b64"]), 0)
        if state.get("key") is not None:
            return cls(state["topic"], str(state["key"]).encode(), 0)
        return cls(state["topic"], None, int(state.get("partition") or 0))

    def fields(self) -> dict[str, str]:
        """The form fields (or query) that name it again."""
        if self.key is None:
            return {"topic": self.topic, "partition": str(self.partition)}
        try:
            return {"topic": self.topic, "key": self.key.decode("utf-8")}
        except UnicodeDecodeError:
            return {"topic": self.topic, "key_b64": base64.b64encode(self.key).decode("ascii")}

    def matches(self, state: Mapping[str, Any]) -> bool:
        """Whether ``state`` (an entry of ``ordered.keys_parked``) is this key."""
        return ParkedKey.of_state(state) == self


def release_effect(doc: Mapping[str, Any], parked: ParkedKey, skip: bool) -> dict[str, Any]:
    """What releasing ``parked`` would do, from the status document (the dry run)."""
    states = (doc.get("ordered") or {}).get("keys_parked") or []
    state = next((s for s in states if parked.matches(s)), None)
    if state is None:
        return {"possible": False, "summary": "This key is not parked: nothing to release.",
                "state": None}  # fmt: skip
    why = state.get("parked") or {}
    error = (why.get("error") or {}).get("fqcn", "")
    head = f"Its head {state['head_task_id']} (parked: {why.get('reason')}, {error})"
    then = (" is written to the route's DLT, and the key goes on with its next record"
            if skip else " runs again with a fresh retry budget")  # fmt: skip
    behind = f"; {int(state['depth']) - 1} record(s) wait behind it."
    return {"possible": True, "summary": head + then + behind, "state": state}


def replay_preview(letters: list[Letter]) -> list[dict[str, Any]]:
    """What replaying the selected ``letters`` to their source topics would do (the dry run):
    each one's row, replay's verdict (``replay``, ``limited``, ``unreplayable``) and why."""
    found = []
    for letter in letters:
        decision = plan(letter.view, ReplayFilter(), DEFAULT_MAX_REPLAYS)
        origin = decision.origin
        found.append({**row(letter), "verdict": str(decision.verdict), "why": decision.why,
                      "to": f"{origin.topic}[{origin.partition}]" if origin else "-"})  # fmt: skip
    return found
