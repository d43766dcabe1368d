"""pytest plugin: run kombu's own Redis transport tests against ``bridge.worker.transport``.

Loaded by ``scripts/kombu_tests.sh`` (``-p kombu_compat``) in kombu's unpacked sdist:

- ``kombu.transport.redis``'s ``Channel``, ``QoS``, ``Transport`` and their Sentinel
  variants become ours before any test module imports them (the tests subclass them or open
  ``redis://`` and ``sentinel://`` connections, which :func:`bridge.worker.transport.install`
  maps to ours);
- the fake Redis client of kombu's unit tests, which speaks ``BRPOP``, learns the commands our
  fetch sends (``BLMOVE``, the scan script, ``LREM``, the processing index), so that the tests
  that drive a fetch run ours instead of failing on the fake;
- ``expected_failures.txt`` (next to this file) marks the tests that fail by design: ``xfail``
  (strict: one that passes fails the run) or ``skip``, each with its reason. An entry that
  matches no collected test of a file that was collected fails the run too: the list follows
  kombu's tests.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from kombu.transport import redis as kombu_redis
from kombu.utils import eventio

from bridge.backends.redis.fetch import RESTORE
from bridge.worker import sentinel_transport
from bridge.worker import transport as worker_transport

EXPECTED = Path(__file__).with_name("expected_failures.txt")
_MARKERS = ("env(name): kombu's", "flaky(reruns, reruns_delay): kombu's (pytest-rerunfailures)",
            "ensured_modules(*modules): kombu's", "masked_modules(*modules): kombu's",
            "replace_module_value(module, name, value): kombu's",
            "sleepdeprived_patched_module(module): kombu's")  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One line of the expected-failures file: ``xfail|skip  PATTERN | reason``."""

    kind: str
    pattern: str
    reason: str

    def matches(self, nodeid: str) -> bool:
        """Whether ``nodeid`` matches the pattern (``*``: any characters, nothing else special)."""
        regex = ".*".join(re.escape(part) for part in self.pattern.split("*"))
        return re.fullmatch(regex, nodeid) is not None

    @property
    def path(self) -> str:
        """The test file the pattern is about."""
        return self.pattern.split("::", 1)[0]


def read_entries(path: Path = EXPECTED) -> list[Entry]:
    """The entries of the expected-failures file (``#`` starts a comment line).

    :raises ValueError: a line is not ``xfail|skip PATTERN | reason``.
    """
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head, sep, reason = line.partition(" | ")
        kind, _, pattern = head.strip().partition(" ")
        if not sep or kind not in ("xfail", "skip") or not pattern.strip() or not reason.strip():
            raise ValueError(f"{path}:{number}: expected 'xfail|skip PATTERN | reason': {line!r}")
        entries.append(Entry(kind, pattern.strip(), reason.strip()))
    return entries


def pytest_configure(config: pytest.Config) -> None:
    for marker in _MARKERS:
        config.addinivalue_line("markers", marker)
    worker_transport.install()
    kombu_redis.Channel = worker_transport.Channel  # type: ignore[misc]
    kombu_redis.QoS = worker_transport.QoS  # type: ignore[misc]
    kombu_redis.Transport = worker_transport.Transport  # type: ignore[misc]
    kombu_redis.SentinelChannel = sentinel_transport.SentinelChannel  # type: ignore[misc]
    kombu_redis.SentinelTransport = sentinel_transport.SentinelTransport  # type: ignore[misc]


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for module in {getattr(item, "module", None) for item in items}:
        if module is not None and module.__name__.endswith("unit.transport.test_redis"):
            teach(module.Client)
            # The module installs a fake poller before its first import of kombu's Redis
            # transport, which this plugin has imported already.
            kombu_redis.poll = eventio.poll  # type: ignore[attr-defined]
    entries = read_entries()
    files = {item.nodeid.split("::", 1)[0] for item in items}
    unused = [e for e in entries if e.path in files and not any(e.matches(i.nodeid) for i in items)]
    if unused:
        raise pytest.UsageError(f"{EXPECTED.name}: no test matches {[e.pattern for e in unused]}")
    for item in items:
        entry = next((e for e in entries if e.matches(item.nodeid)), None)
        if entry is not None and entry.kind == "skip":
            item.add_marker(pytest.mark.skip(reason=entry.reason))
        elif entry is not None:
            item.add_marker(pytest.mark.xfail(reason=entry.reason, strict=True))


def teach(client: Any) -> None:
    """Teach the fake client of kombu's unit tests (``t/unit/transport/test_redis.py``) the
    commands of our fetch (:class:`FetchCommands`), keeping its own for the rest."""
    client.kombu_parse_response, client.kombu_zadd = client.parse_response, client.zadd
    client.lists = defaultdict(list)  # processing lists
    for name in ("parse_response", "lrem", "zadd", "zrange", "eval", "move", "scan"):
        setattr(client, name, getattr(FetchCommands, name))


class FetchCommands:
    """What the fake client answers to our fetch, as Redis would (elements are bytes).
    ``self`` is the fake client: ``queues`` (name -> ``queue.Queue``), ``sets``, ``connection``."""

    lists: dict[str, list[bytes]]
    queues: dict[str, Queue[Any]]
    sets: dict[str, set[Any]]
    connection: Any
    kombu_parse_response: Any
    kombu_zadd: Any

    def parse_response(self, connection: Any, command: str, **options: Any) -> Any:
        if command not in ("BLMOVE", "EVAL", "LREM"):
            return self.kombu_parse_response(connection, command, **options)
        sent, args = self.connection._sock.data.pop()
        self.connection._sock.data = []
        assert sent == command
        if command == "LREM":
            return self.lrem(*args)
        return self.move(args[0], args[1]) if command == "BLMOVE" else self.scan(args[2:])

    def move(self, source: str, dest: str) -> bytes | None:
        try:
            item = self.queues[source].get_nowait()
        except (KeyError, Empty):
            return None
        element: bytes = item.encode() if isinstance(item, str) else item
        self.lists[dest].insert(0, element)
        return element

    def scan(self, keys: list[str]) -> list[Any] | None:
        half = len(keys) // 2
        for i in range(half):
            element = self.move(keys[i], keys[half + i])
            if element is not None:
                return [i, element]
        return None

    def lrem(self, key: str, count: int, value: bytes | str) -> int:
        element = value.encode() if isinstance(value, str) else value
        if element not in self.lists[key]:
            return 0
        self.lists[key].remove(element)
        return 1

    def zadd(self, key: str, *args: Any) -> int | None:
        new = len(set(args[0]) - self.sets[key]) if len(args) == 1 else None
        self.kombu_zadd(key, *args)
        return new

    def zrange(self, key: str, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def eval(self, script: str, numkeys: int, *args: Any) -> int:
        assert script == RESTORE
        processing, source = args[0], args[1]
        moved = 0
        while self.lists[processing]:
            self.queues.setdefault(source, Queue()).put_nowait(self.lists[processing].pop())
            moved += 1
        return moved
