"""The chaos suite's faults against the Sentinel topology (``CHAOS_TOPOLOGY=sentinel``) and the
bridge settings of such a run.

- ``primary-kill``: SIGKILL the primary; once the Sentinels have promoted the replica, the
  killed node stays down a while (a bridge with ``celery.min_replicas_to_accept = 1`` accepts
  nothing meanwhile: the new primary has no replica), then starts again and must come back
  as a replica of the new primary.
- ``primary-partition``: ``kill -STOP`` the primary (it answers nobody, as behind a network
  partition) until the Sentinels have promoted the replica, a while longer, then ``-CONT``:
  it must rejoin as a replica, dropping whatever it held that the new primary never got.
  Partitions alternate between short and long ones. A short one (``-CONT`` 0-0.5 s after the
  promotion: 3-5 s in all here) ends before the clients' socket timeouts (the bridge's is 5
  s), so the bridge and the workers keep their connections to the old primary, which acts as
  a primary until Sentinel turns it into a replica (~10 s later), and what they write there
  is dropped then. A long one (2-4 s after the promotion) outlasts the timeouts: the clients
  give up on the old primary and ask the Sentinels for the new one.

Each fault reports when the new primary was named, how long the old one went on acting as a
primary after it came back (Sentinel reconfigures it only once it sees it again) and when it
was a replica again, and how many bytes of the old primary's replication stream the new one
never got (``dropped_bytes``: writes the old primary took, before the fault or after it came
back, that the failover undid).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterable
from typing import Any

import redis

from tests.chaos.services import MASTER_NAME, Services
from tests.conftest import wait_for

MIN_REPLICAS_ENV = "CHAOS_MIN_REPLICAS"
# bridge.backends.redis.dispatch's PublishError when too few replicas acknowledged a batch.
NOT_REPLICATED = re.compile(r"(\d+) task messages enqueued, not replicated")
PROMOTION_TIMEOUT_S = 60  # down-after 2 s, a vote, a promotion: seconds on a busy machine
REJOIN_TIMEOUT_S = 90  # a full resync of the rejoining node


def min_replicas(services: Services) -> int:
    """``celery.min_replicas_to_accept`` of the run: ``CHAOS_MIN_REPLICAS``, by default 1 with
    Sentinels and 0 with one Redis.

    :raises ValueError: more than 0 with one Redis (no replica would ever acknowledge).
    """
    wanted = int(os.environ.get(MIN_REPLICAS_ENV) or (1 if services.sentinel else 0))
    if wanted and not services.sentinel:
        raise ValueError(f"{MIN_REPLICAS_ENV}={wanted} needs CHAOS_TOPOLOGY=sentinel")
    return wanted


def broker_settings(services: Services) -> dict[str, dict[str, Any]]:
    """What the run's bridge configuration adds for the topology (nothing with one Redis):
    the name of the primary the Sentinels monitor, the replicas each enqueue waits for."""
    if not services.sentinel:
        return {}
    return {
        "celery": {"min_replicas_to_accept": min_replicas(services)},
        "celery.transport_options": {"master_name": MASTER_NAME},
    }


def not_replicated(bridge_logs: Iterable[str]) -> dict[str, int]:
    """The batches (and their task messages) the primary ran but too few replicas
    acknowledged, so that the bridge did not accept them (rewound, enqueued again): what a
    failover could have lost without ``celery.min_replicas_to_accept``."""
    counts = [int(n) for log in bridge_logs for n in NOT_REPLICATED.findall(log)]
    return {"batches": len(counts), "task_messages": sum(counts)}


def replication(port: int) -> dict[str, Any]:
    """``INFO replication`` of the data node on ``port`` (empty if it does not answer)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, decode_responses=True)
    try:
        return dict(client.info("replication"))
    except redis.RedisError:
        return {}
    finally:
        client.close()


def lag_bytes(info: dict[str, Any]) -> int | None:
    """How many bytes of a primary's stream its least advanced replica has not acknowledged
    (None without a replica); a replica acknowledges once a second, so this overstates the
    lag by up to a second of writes."""
    offsets = [int(v["offset"]) for k, v in info.items() if k.startswith("slave") and
               isinstance(v, dict) and "offset" in v]  # fmt: skip
    if not offsets:
        return None
    return int(info.get("master_repl_offset", 0)) - min(offsets)


def kill_primary(services: Services, rng: random.Random) -> dict[str, Any]:
    """SIGKILL the primary, wait for the promotion, keep it down 1-3 s, start it again, wait
    until it is a replica of the new primary."""
    old, new = _ports(services)
    before = replication(old)
    os.kill(services.node_pid(old), signal.SIGKILL)
    began = time.monotonic()
    promoted_s = _promotion(services, old, new, began)
    down_s = round(rng.uniform(1.0, 3.0), 1)
    time.sleep(down_s)  # the fault's length: the new primary runs without a replica
    services.run("start-redis")  # the killed node, as a replica of the current primary
    return {"old_primary": old, "new_primary": new, "promoted_after_s": promoted_s,
            "down_after_promotion_s": down_s, **_rejoin(old, new, before, began)}  # fmt: skip


def partition_primary(services: Services, rng: random.Random, short: bool) -> dict[str, Any]:
    """``kill -STOP`` the primary until the replica is promoted and 0-0.5 s (``short``) or
    2-4 s more, then ``-CONT``; wait until it is a replica of the new primary."""
    old, new = _ports(services)
    before = replication(old)
    pid = services.node_pid(old)
    os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    try:
        promoted_s = _promotion(services, old, new, began)
        extra_s = round(rng.uniform(*((0.0, 0.5) if short else (2.0, 4.0))), 1)
        time.sleep(extra_s)  # the fault's length: the partition outlasts the failover
    finally:
        os.kill(pid, signal.SIGCONT)
    return {"old_primary": old, "new_primary": new, "promoted_after_s": promoted_s,
            "short": short, "stopped_after_promotion_s": extra_s,
            **_rejoin(old, new, before, began)}  # fmt: skip


def _ports(services: Services) -> tuple[int, int]:
    """The current primary's port and the replica's."""
    old = services.primary_port()
    (new,) = (p for p in services.data_ports if p != old)
    return old, new


def _promotion(services: Services, old: int, new: int, began: float) -> float:
    """Seconds from ``began`` until the Sentinels name ``new`` and it acts as the primary."""
    wait_for(
        lambda: _names(services, new) and services.role(new) == "master",
        timeout_s=PROMOTION_TIMEOUT_S,
        interval_s=0.1,
        what=f"the Sentinels to promote {new} in place of {old} ({MASTER_NAME})",
    )
    return round(time.monotonic() - began, 1)


def _names(services: Services, port: int) -> bool:
    try:
        return services.primary_port() == port
    except redis.RedisError:  # no Sentinel answers yet
        return False


def _rejoin(old: int, new: int, before: dict[str, Any], began: float) -> dict[str, Any]:
    """Wait until ``old`` replicates ``new`` with its link up, watching what it does as a
    primary meanwhile (a stopped primary that comes back takes writes until Sentinel turns
    it into a replica); seconds from ``began``, and the replication streams."""
    last = {"offset": int(before.get("master_repl_offset", 0)), "at_s": 0.0}

    def back() -> bool:
        info = replication(old)
        if info.get("role") == "master":
            last["offset"] = max(last["offset"], int(info.get("master_repl_offset", 0)))
            last["at_s"] = round(time.monotonic() - began, 1)
        return _replicates(info, new)

    wait_for(back, timeout_s=REJOIN_TIMEOUT_S, interval_s=0.1,
             what=f"redis {old} to come back as a replica of {new}")  # fmt: skip
    return {"rejoined_after_s": round(time.monotonic() - began, 1),
            "acted_as_primary_until_s": last["at_s"] or None,
            **_stream(before, int(last["offset"]), new)}  # fmt: skip


def _replicates(info: dict[str, Any], primary: int) -> bool:
    return (
        info.get("role") == "slave"
        and int(info.get("master_port", 0)) == primary
        and info.get("master_link_status") == "up"
    )


def _stream(before: dict[str, Any], last: int, new: int) -> dict[str, Any]:
    """The old primary's stream (when the fault began, and the last offset seen while it
    acted as a primary) against what the new primary inherited of it (its
    ``second_repl_offset`` - 1: where its own history starts)."""
    inherited = int(replication(new).get("second_repl_offset", 0)) - 1
    return {
        "replica_ack_lag_bytes_at_fault": lag_bytes(before),
        "primary_offset_at_fault": int(before.get("master_repl_offset", 0)),
        "last_offset_as_primary": last,
        "inherited_offset": inherited,
        # What the old primary wrote that the new one never got. A lower bound: a killed
        # primary's writes after the read just before the kill are not seen.
        "dropped_bytes": max(0, last - inherited),
    }
