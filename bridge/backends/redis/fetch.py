"""Reliable fetch for the workers' Redis transport: a worker moves each queue element into its
own processing list instead of popping it, so a worker killed before kombu has recorded the
message as unacknowledged loses nothing (Redis's "reliable queue" pattern, ``LMOVE``).

kombu pops with ``BRPOP`` and only then writes the message to its unacknowledged hash, which
the visibility timeout restores; a worker SIGKILLed in between loses the message
(celery/celery#1392, #4354). Here the element stays in Redis the whole time::

    queue ──BLMOVE / LMOVE──> processing list ──MULTI: HSET unacked, LREM processing──> unacked
                                    │ owner dead (no heartbeat for the lease)
                                    └──RESTORE──> back to the front of its queue

A processing list belongs to one channel and one queue key; its name carries both
(:func:`processing_key`). Channels keep their lists' scores in the index fresh (heartbeat); any
worker moves the elements of a list whose score is older than the lease back to their queue.
A live worker holds an element there only between the reply of its fetch and kombu's
acknowledgement bookkeeping, so a restore that happens to be wrong about a slow worker costs at
most one duplicate execution, never a loss.

Redis offers no blocking move from several lists. One queue key (the bridge's workers use one
priority step, so one key per queue) blocks in ``BLMOVE`` for the usual ``brpop_timeout``.
Several keys alternate: a script moves from the first non-empty key without blocking, and when
all are empty the channel blocks on one key (in turn) for ``block_s``. A busy key is served at
once; an idle worker notices a new message within about ``block_s`` times the number of keys.

A channel whose queues are all consumed without acknowledgement (``no_ack``: e.g. the reply
queues of ``celery inspect`` and Flower) pops with ``BRPOP`` as kombu does: such a consumer is at
most once, and a processing list would only make it deliver again a message whose callback
raised, or that a half-open connection kept it from settling.

This module is pure: which command to send, and what a reply holds. The Redis I/O is in
:mod:`bridge.worker.transport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.backends.redis import scripts

PROCESSING_PREFIX = "_kombu.processing."
PROCESSING_INDEX = "_kombu.processing_index"
_TOKEN_CHARS = 32  # a uuid4's hex

# Sent in full with every scan (EVAL); bridge/backends/redis/lua/ documents both scripts.
MOVE_FIRST = scripts.script("fetch_move_first")
RESTORE = scripts.script("fetch_restore")


def processing_key(token: str, source: str) -> str:
    """The processing list of the channel ``token`` (32 hex digits) for queue key ``source``."""
    return f"{PROCESSING_PREFIX}{token}.{source}"


def source_of(processing: str) -> str:
    """The queue key a processing list (named by :func:`processing_key`) takes elements from.

    Raises:
        ValueError: ``processing`` is not such a name.
    """
    return parse_processing(processing)[1]


def parse_processing(processing: str) -> tuple[str, str]:
    """The channel token and the queue key of a processing list (named by
    :func:`processing_key`).

    Raises:
        ValueError: ``processing`` is not such a name.
    """
    head = len(PROCESSING_PREFIX) + _TOKEN_CHARS
    if not processing.startswith(PROCESSING_PREFIX) or processing[head : head + 1] != ".":
        raise ValueError(f"not a processing list: {processing!r}")
    return processing[len(PROCESSING_PREFIX) : head], processing[head + 1 :]


@dataclass
class Fetcher:
    """Which fetch command a channel sends next, and what the reply to it holds.

    States, for several queue keys: *scan* (send ``MOVE_FIRST`` over all keys) and *block*
    (send ``BLMOVE`` on one key, taking turns, for ``block_s``). A scan that finds nothing
    goes to block; any block reply goes back to scan. One key is always ``BLMOVE`` with the
    caller's timeout. A fetch without a processing list (``keep=False``) is kombu's ``BRPOP``.
    """

    token: str
    block_s: float
    _blocking: bool = False
    _turn: int = 0
    _sent: list[str] = field(default_factory=list)  # the queue keys of the command in flight
    _name: str = "BLMOVE"
    _lists: dict[str, str] = field(default_factory=dict)  # queue key -> processing list

    @property
    def command_name(self) -> str:
        """The Redis command in flight, for redis-py's ``parse_response``."""
        return self._name

    @property
    def kept(self) -> bool:
        """Whether the element of the last reply waits in its processing list (not ``BRPOP``)."""
        return self._name != "BRPOP"

    def command(self, sources: list[str], timeout_s: float, *, keep: bool = True) -> list[Any]:
        """The command that fetches one element from ``sources`` (queue keys, in the order the
        channel would serve them); ``timeout_s`` is how long one key blocks (0: forever);
        ``keep=False``: pop it (``BRPOP``), with no processing list."""
        if not keep:
            self._sent, self._name = list(sources), "BRPOP"
            return ["BRPOP", *sources, timeout_s]
        if len(sources) == 1 or self._blocking:
            source = sources[self._turn % len(sources)]
            wait_s = timeout_s if len(sources) == 1 else self.block_s
            self._sent, self._name = [source], "BLMOVE"
            return ["BLMOVE", source, self.processing(source), "RIGHT", "LEFT", wait_s]
        self._sent, self._name = list(sources), "EVAL"
        lists = [self.processing(source) for source in sources]
        return ["EVAL", MOVE_FIRST, 2 * len(sources), *sources, *lists]

    def reply(self, reply: Any) -> tuple[str, bytes] | None:
        """The queue key and element that the reply to the last :meth:`command` holds, or
        ``None`` when it found nothing (a ``BLMOVE`` timeout or an empty scan)."""
        if self._name == "BRPOP":
            if reply is None:
                return None
            key, element = reply
            return _text(key), bytes(element)
        if self._name == "BLMOVE":
            self._blocking, self._turn = False, self._turn + 1
            return None if reply is None else (self._sent[0], bytes(reply))
        if reply is None:
            self._blocking = True
            return None
        index, element = reply
        return self._sent[int(index)], bytes(element)

    def named(self) -> list[str]:
        """Every processing list this fetcher has named, sorted."""
        return sorted(self._lists.values())

    def processing(self, source: str) -> str:
        """This channel's processing list for queue key ``source`` (named once per key)."""
        name = self._lists.get(source)
        if name is None:
            name = self._lists[source] = processing_key(self.token, source)
        return name


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
