"""The chaos suite's verdict, from what was produced, executed and dead-lettered (pure).

A record is known by its coordinates in Kafka, ``topic:partition:offset`` (the tail of its task
id). The verdict answers, without any I/O:

- **lost**: records in the source topics neither handled (an ``ok`` execution) nor in a DLT,
  and records Kafka acknowledged to the producer that are not in the source topics;
- **order**: on ordered routes, for every key, the first successful executions of its records
  follow their offsets;
- **duplicates**: executions beyond one per record and attempt, each explained or not. A
  duplicate is explained by a worker kill when an earlier execution of that record, at this
  attempt or an earlier one, ran in a worker generation that was SIGKILLed, and the duplicate
  runs in a later generation (so after the kill): the killed worker never acknowledged its
  message (``task_acks_late``), so Redis delivered it again. It is explained by a Redis
  restart when the earlier execution ran while Redis restarted (or while the worker
  reconnected): its acknowledgement was lost (Celery logs ``Couldn't ack``), the message stayed
  in Redis's unacknowledged set and came back after the visibility timeout; or when a worker
  received the record's task message while Redis restarted: the worker restores what it holds
  unrun when its connection drops, the restore fails with Redis down, the messages come back
  after the visibility timeout, and a second copy of them has been seen a minute later (its
  source is not pinned down). It is explained by a Sentinel failover (the primary killed or
  cut off, the replica promoted) when the earlier execution ran, or a worker received the
  record's task message, while the primary failed over and the old one rejoined as a
  replica: the new primary holds what the old one had replicated, so an acknowledgement (or
  a fetch) in the suffix it never got is undone and the message is delivered again; or the
  bridge's enqueue ran on the old primary, a worker took it there, and the enqueue (not
  replicated, so not accepted) was done again on the new primary. Anything else (two
  task messages for one record, a redelivery with no fault behind it, say after a task
  outlived the broker's visibility timeout) is unexplained; an unexplained rerun of a first
  attempt is counted as an **enqueue duplicate** too (a second task message for the record
  is its likeliest cause);
- **DLT duplicates**: records dead-lettered more than once, explained the same way, or by a
  timed-out write: a write timed out against a frozen or restarting broker, so it was written
  again, by the worker's or the bridge's sender itself (``write to … failed
  (KafkaTimeoutError…``), or by the bridge once the worker handed the dead letter over (``kept
  in Redis for the bridge``); the broker had written the timed-out request after all. A
  producer expires a batch already sent as well as one still waiting, and its idempotence
  does not cover a record sent again as a new batch.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WORKER_KILL = "worker-kill"
REDIS_RESTART = "redis-restart"
FAILOVER = "redis-failover"
DLT_TIMEOUT = "dlt-timeout"
UNEXPLAINED = "unexplained"
CAUSES = (WORKER_KILL, REDIS_RESTART, FAILOVER, UNEXPLAINED)
DLT_CAUSES = (WORKER_KILL, REDIS_RESTART, FAILOVER, DLT_TIMEOUT, UNEXPLAINED)
Window = tuple[float, float]


@dataclass(frozen=True)
class Source:
    """A record read back from a source topic: its coordinates, id, key and route."""

    coords: str
    id: str
    key: str
    ordered: bool


@dataclass(frozen=True)
class Execution:
    """One line of the handlers' ledger.

    :param event: ``start`` (written before the work), then ``ok``, ``retry`` or ``dead``.
    :param attempt: Celery's ``request.retries`` (0 on the first attempt).
    :param gen: the worker generation (each started worker gets the next number).
    :param at: when it was written, in seconds since the epoch.
    """

    coords: str
    event: str
    attempt: int
    gen: int
    at: float = 0.0


@dataclass
class Verdict:
    """What the chaos run comes to; ``passed`` only with nothing lost, out of order or
    duplicated without explanation."""

    produced: int
    handled: int
    dead_lettered: int
    lost: list[str]
    lost_in_kafka: list[str]
    order_violations: list[str]
    duplicates: dict[str, int]
    dlt_duplicates: dict[str, int]
    handled_and_dead: list[str]
    unknown: list[str]
    enqueue_duplicates: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not (
            self.lost
            or self.lost_in_kafka
            or self.order_violations
            or self.duplicates[UNEXPLAINED]
            or self.dlt_duplicates[UNEXPLAINED]
            or self.handled_and_dead
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "handled": self.handled,
            "dead_lettered": self.dead_lettered,
            "lost": len(self.lost) + len(self.lost_in_kafka),
            "lost_after_kafka_ack": len(self.lost_in_kafka),
            "order_violations": len(self.order_violations),
            "duplicates": self.duplicates,
            "enqueue_duplicates": self.enqueue_duplicates,
            "dlt_duplicates": self.dlt_duplicates,
            "handled_and_dead_lettered": len(self.handled_and_dead),
            "executed_but_not_in_source": len(self.unknown),
            "examples": self.examples,
            "passed": self.passed,
        }


def judge(
    sources: Iterable[Source],
    executions: Iterable[Execution],
    dead_letters: Iterable[str],
    killed_gens: Iterable[int],
    acked_ids: Iterable[str] = (),
    ack_loss: Iterable[Window] = (),
    timed_out: Iterable[str] = (),
    received_in_restart: Iterable[str] = (),
    failover: Iterable[Window] = (),
    received_in_failover: Iterable[str] = (),
) -> Verdict:
    """The verdict of one run.

    :param sources: every record of the source topics.
    :param executions: the handlers' ledger, in the order it was written.
    :param dead_letters: the original coordinates of every DLT record (repeats kept).
    :param killed_gens: the worker generations that were SIGKILLed.
    :param acked_ids: the ids of the records Kafka acknowledged to the producer.
    :param ack_loss: the windows (epoch seconds) in which Redis restarted and the worker
        reconnected: an acknowledgement sent then may be lost.
    :param timed_out: the coordinates of the records whose dead letter was written again
        after a write timed out.
    :param received_in_restart: the coordinates of the records whose task message a worker
        received within one of the ``ack_loss`` windows.
    :param failover: the windows (epoch seconds) from each Sentinel fault until the old
        primary rejoined as a replica (and the workers reconnected).
    :param received_in_failover: the coordinates of the records whose task message a worker
        received within one of the ``failover`` windows.
    """
    by_coords = {s.coords: s for s in sources}
    runs = list(executions)
    faults = Faults(
        set(killed_gens),
        list(ack_loss),
        set(received_in_restart),
        list(failover),
        set(received_in_failover),
    )
    dead = Counter(dead_letters)
    handled = {e.coords for e in runs if e.event == "ok"}
    done = handled | set(dead)
    executed = {e.coords for e in runs}
    duplicates, examples = classify_duplicates(runs, faults)
    enqueue_duplicates = len(examples.pop("enqueue-duplicates"))
    dlt_duplicates = classify_dlt_duplicates(dead, runs, faults, set(timed_out))
    lost = sorted(set(by_coords) - done)
    violations = order_violations(runs, by_coords)
    examples.update({"lost": lost[:20], "order_violations": violations[:20]})
    return Verdict(
        produced=len(by_coords),
        handled=len(handled & set(by_coords)),
        dead_lettered=len(set(dead) & set(by_coords)),
        lost=lost,
        lost_in_kafka=sorted(set(acked_ids) - {s.id for s in by_coords.values()}),
        order_violations=violations,
        duplicates=duplicates,
        dlt_duplicates=dlt_duplicates,
        handled_and_dead=sorted(handled & set(dead)),
        unknown=sorted((executed | set(dead)) - set(by_coords)),
        enqueue_duplicates=enqueue_duplicates,
        examples=examples,
    )


@dataclass(frozen=True)
class Faults:
    """What can explain a duplicate: killed worker generations, Redis restart and failover
    windows, the records received in them."""

    killed: set[int]
    ack_loss: list[Window]
    received_in_restart: set[str] = field(default_factory=set)
    failover: list[Window] = field(default_factory=list)
    received_in_failover: set[str] = field(default_factory=set)

    def cause(self, earlier: Iterable[Execution], run: Execution) -> str:
        """Why ``run`` repeats one of the ``earlier`` executions of its record."""
        before = [e for e in earlier if e.attempt <= run.attempt]
        if any(e.gen in self.killed and e.gen < run.gen for e in before):
            return WORKER_KILL
        if any(a <= e.at <= b and run.at > a for e in before for a, b in self.ack_loss):
            return REDIS_RESTART
        if run.coords in self.received_in_restart:
            return REDIS_RESTART
        if any(a <= e.at <= b and run.at > a for e in before for a, b in self.failover):
            return FAILOVER
        if run.coords in self.received_in_failover:
            return FAILOVER
        return UNEXPLAINED


def classify_duplicates(
    runs: list[Execution], faults: Faults
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Count the starts beyond one per (record, attempt), by cause (see the module docstring).

    :returns: ``{cause: count}`` and up to 20 example coordinates per cause, and under
        ``enqueue-duplicates`` every unexplained rerun of a first attempt.
    """
    counts = dict.fromkeys(CAUSES, 0)
    examples: dict[str, list[str]] = {cause: [] for cause in CAUSES}
    enqueued_twice: list[str] = []
    seen: dict[str, list[Execution]] = defaultdict(list)
    for run in runs:
        earlier = seen[run.coords]
        if run.event == "start" and any(
            e.attempt == run.attempt and e.event == "start" for e in earlier
        ):
            cause = faults.cause(earlier, run)
            counts[cause] += 1
            if len(examples[cause]) < 20:
                examples[cause].append(f"{run.coords}#{run.attempt}")
            if cause == UNEXPLAINED and run.attempt == 0:
                enqueued_twice.append(run.coords)
        earlier.append(run)
    found = {f"duplicates-{cause}": ex for cause, ex in examples.items()}
    return counts, {**found, "enqueue-duplicates": enqueued_twice}


def classify_dlt_duplicates(
    dead: Mapping[str, int], runs: list[Execution], faults: Faults, timed_out: set[str]
) -> dict[str, int]:
    """Dead letters beyond one per record: a timed-out write written again, else the cause of
    the record's last execution."""
    by_coords: dict[str, list[Execution]] = defaultdict(list)
    for run in runs:
        by_coords[run.coords].append(run)
    counts = dict.fromkeys(DLT_CAUSES, 0)
    for coords, times in dead.items():
        if times > 1:
            counts[_dlt_cause(by_coords[coords], faults, coords in timed_out)] += times - 1
    return counts


def _dlt_cause(execs: list[Execution], faults: Faults, timed_out: bool) -> str:
    if timed_out:
        return DLT_TIMEOUT
    starts = [i for i, e in enumerate(execs) if e.event == "start"]
    return faults.cause(execs[: starts[-1]], execs[starts[-1]]) if starts else UNEXPLAINED


def order_violations(runs: list[Execution], sources: Mapping[str, Source]) -> list[str]:
    """Keys of ordered routes whose records first succeeded out of offset order.

    :returns: one line per violation: the key, then the offsets that succeeded late.
    """
    last: dict[tuple[str, str], int] = {}
    succeeded: set[str] = set()
    violations: list[str] = []
    for run in runs:
        source = sources.get(run.coords)
        if run.event != "ok" or source is None or not source.ordered or run.coords in succeeded:
            continue
        succeeded.add(run.coords)
        topic, partition, offset = split(run.coords)
        key = (f"{topic}:{partition}", source.key)
        if offset < last.get(key, -1):
            violations.append(f"{key[0]} key {source.key}: {offset} after {last[key]}")
        last[key] = max(offset, last.get(key, -1))
    return violations


def split(coords: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` into its parts (a topic name has no colon)."""
    topic, partition, offset = coords.rsplit(":", 2)
    return topic, int(partition), int(offset)


def lost_by_fault(
    lost: Iterable[str],
    produced_at: Mapping[str, float],
    faults: Iterable[Mapping[str, Any]],
    lead_s: float = 2.0,
    slack_s: float = 5.0,
) -> dict[str, int]:
    """How many lost records were produced during each fault (from ``lead_s`` before it to
    ``slack_s`` after it; of two such faults, the later one, whose start the record preceded
    or which took it at once): ``{"3 primary-partition": 12, "none": 0}``, the fault named by
    its place in the run.

    :param produced_at: each record's Kafka timestamp, in seconds since the epoch.
    :param faults: the fault log's entries (``fault``, ``epoch``: its start and end).
    """
    windows = [(f"{i} {f['fault']}", f["epoch"][0] - lead_s, f["epoch"][1] + slack_s)
               for i, f in enumerate(faults)]  # fmt: skip
    found = Counter(
        next((name for name, a, b in reversed(windows) if a <= produced_at.get(c, -1.0) <= b),
             "none")
        for c in lost
    )  # fmt: skip
    return dict(found)
