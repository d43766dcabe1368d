"""Workarounds for bugs of kafka-python 3.0 (the version pinned), each on one consumer.

**A rebalance that outlasts a poll can leave the consumer joined to nothing, for good.**
kafka-python 3.0's ``join_group_async`` loops ``while need_rejoin()`` and, when the poll's
timeout ends first, leaves the JoinGroup/SyncGroup task in flight for the next poll. But
``need_rejoin`` is computed from the group's metadata snapshots, and the leader's assignment
(``_perform_assignment``, run inside that task) makes them equal: the next poll sees no rejoin
needed, never awaits the finished task, and the member stays ``REBALANCING`` with no
partitions and heartbeats off. Seen here in 1 of 5 starts with a routed topic created after
the bridge (a metadata change rebalances the group; so does adding partitions to a topic).
The Java client's loop condition is ``rejoinNeededOrPending()`` (a join in flight counts);
:func:`await_pending_joins` gives kafka-python's coordinator the same.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def await_pending_joins(consumer: Any) -> bool:
    """Make ``consumer``'s group coordinator count a join in flight as a rejoin needed.

    :returns: whether it was patched (``False``: kafka-python no longer looks like 3.0).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "_join_task"):
        log.warning("kafka-python's group coordinator changed: join workaround not applied")
        return False
    needed = coordinator.need_rejoin

    def need_rejoin_or_pending() -> bool:
        return bool(needed()) or coordinator._join_task is not None

    coordinator.need_rejoin = need_rejoin_or_pending
    return True
