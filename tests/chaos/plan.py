"""Which faults the chaos suite injects, in which order, after which pauses (pure).

Two profiles: ``full`` (``make chaos``: every fault 3 times) and ``reduced`` (plain ``pytest``,
so CI: every fault twice). A seeded RNG shuffles the faults and draws the pause before each,
so a run is repeated by its seed (``CHAOS_SEED``). Each Redis topology has its faults:
:data:`FAULTS` against one Redis, :data:`SENTINEL_FAULTS` against a primary, a replica and
three Sentinels (``CHAOS_TOPOLOGY=sentinel``, ``make chaos-sentinel``).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

FAULTS = (
    "bridge-kill",  # SIGKILL the bridge, start a new one in the group
    "worker-kill",  # SIGKILL a worker (and its pool) while a task runs, start a new one
    "redis-restart",  # graceful restart (SHUTDOWN writes the AOF)
    "kafka-restart",  # stop the broker (SIGTERM), start it again
    "kafka-freeze",  # kill -STOP the broker for freeze_s, then -CONT
    "rebalance",  # a second bridge joins the group, then leaves it
)
SENTINEL_FAULTS = (
    "primary-kill",  # SIGKILL the primary; once the replica is promoted, restart it (a replica)
    "primary-partition",  # kill -STOP the primary until the replica is promoted, then -CONT
)


@dataclass(frozen=True)
class Profile:
    """How hard a run is.

    :param repeats: how many times each fault is injected.
    :param pause_s: the range of the pause before each fault, in seconds.
    :param rate_per_s: records produced per second while faults are injected.
    :param freeze_s: how long a frozen broker stays stopped.
    """

    name: str
    repeats: int
    pause_s: tuple[float, float]
    rate_per_s: float
    freeze_s: float = 20.0


PROFILES = {
    "full": Profile("full", repeats=3, pause_s=(3.0, 8.0), rate_per_s=30.0),
    "reduced": Profile("reduced", repeats=2, pause_s=(1.0, 3.0), rate_per_s=30.0),
}


@dataclass(frozen=True)
class Step:
    """One fault and the pause before it, in seconds."""

    fault: str
    pause_s: float


def faults_of(topology: str) -> tuple[str, ...]:
    """The faults injected against a Redis ``topology`` (``single`` or ``sentinel``)."""
    return SENTINEL_FAULTS if topology == "sentinel" else FAULTS


def plan(profile: Profile, seed: int, faults: tuple[str, ...] = FAULTS) -> list[Step]:
    """Every one of ``faults`` ``profile.repeats`` times, shuffled, each after a random pause.

    Two faults of the same kind never follow each other, so each hits a system that has
    recovered from the last one of its kind at least once in between.
    """
    rng = random.Random(seed)
    steps = [f for f in faults for _ in range(profile.repeats)]
    while True:
        rng.shuffle(steps)
        if all(a != b for a, b in itertools.pairwise(steps)):
            break
    return [Step(f, round(rng.uniform(*profile.pause_s), 2)) for f in steps]


def profile_named(name: str) -> Profile:
    """The profile called ``name``.

    :raises ValueError: no profile has that name.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"CHAOS_PROFILE must be one of {sorted(PROFILES)}, not {name!r}") from None
