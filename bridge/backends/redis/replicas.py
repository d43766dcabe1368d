"""Replicated acceptance (pure): whether a batch counts as accepted once Redis's ``WAIT`` says
how many replicas hold it, and what start-up says of a primary with too few replicas.

A Redis replica holds a prefix of its primary's one ordered write stream, so ``WAIT`` after the
enqueue script covers every earlier write too, the one of a rewound attempt included (the
script always writes: it refreshes its partitions' watermarks). ``celery.min_replicas_to_accept``
0 runs no ``WAIT`` at all.
"""

from __future__ import annotations

SETTING = "celery.min_replicas_to_accept"


def shortfall(wanted: int, got: int, timeout_ms: int) -> str | None:
    """Why a batch is not accepted: ``WAIT`` saw ``got`` replicas within ``timeout_ms`` and
    ``wanted`` are required; None when enough (or none are required)."""
    if got >= wanted:
        return None
    return (f"{SETTING} is {wanted}: only {got} replica(s) acknowledged the enqueue within "
            f"celery.replica_ack_timeout_ms ({timeout_ms} ms); not accepted, retried")  # fmt: skip


def startup_warning(wanted: int, connected: int) -> str | None:
    """What start-up says when the primary has ``connected`` replicas (``INFO replication``)
    and ``wanted`` must acknowledge each batch; None when enough.

    A warning, not a refusal: a Sentinel failover in progress leaves the new primary without
    replicas for seconds, and the bridge waits that out (each batch fails, backs off, retries);
    a replica that never comes back is named by this line and by every failed batch's."""
    if connected >= wanted:
        return None
    return (f"{SETTING} is {wanted} but the primary has {connected} connected replica(s): "
            f"no batch is accepted (nor its offsets committed) until {wanted} are connected "
            f"and acknowledge writes")  # fmt: skip
