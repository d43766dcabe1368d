"""``python -m bridge topics create``: the routed topics that do not exist are created with the
partitions asked for, every route's dead-letter topic with its source's partition count; topics
that exist are left as they are, and a topic that is not routed is refused by name."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from tests.integration.conftest import REPO, config_toml
from tests.integration.helpers import MakeTopic


def run_topics(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "topics", "create", "--config", str(config), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def partitions(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {m["name"]: len(m["partitions"]) for m in admin.describe_topics(names)
            if m.get("error_code", 0) == 0}  # fmt: skip


@pytest.fixture
def new_names(admin: KafkaAdminClient) -> Iterator[list[str]]:
    """Two topic names nobody created yet; deleted after the test with their DLTs."""
    names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    yield names
    existing = set(admin.list_topics())
    doomed = [t for t in existing if any(t == n or t.startswith(f"{n}.") for n in names)]
    if doomed:
        admin.delete_topics(doomed)


def test_creates_the_routed_topics_and_their_dead_letter_topics(
    tmp_path: Path, admin: KafkaAdminClient, new_names: list[str], make_topic: MakeTopic
) -> None:
    existing = make_topic(partitions=2)  # routed too, and left as it is
    group_id = f"g-{uuid.uuid4().hex[:8]}"
    routes = [{"topic": t, "task": "shop.handle_order"} for t in [*new_names, existing.name]]
    config = tmp_path / "bridge.toml"
    config.write_text(config_toml(group_id=group_id, routes=routes))

    created = run_topics(config, "--partitions", "3")
    assert created.returncode == 0, created.stderr
    dlts = [f"{t}.{group_id}.dlt" for t in [*new_names, existing.name]]
    assert partitions(admin, [*new_names, existing.name, *dlts]) == {
        new_names[0]: 3, new_names[1]: 3, existing.name: 2,
        dlts[0]: 3, dlts[1]: 3, dlts[2]: 2,
    }  # fmt: skip
    assert f"{new_names[0]}: created, 3 partitions" in created.stdout
    assert f"{existing.name}: exists, 2 partitions" in created.stdout
    assert f"{dlts[2]}: created, 2 partitions" in created.stdout

    again = run_topics(config, "--partitions", "5")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout  # nothing new; nothing changed
    assert partitions(admin, [new_names[0]]) == {new_names[0]: 3}


def test_a_topic_that_is_not_routed_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(config_toml(group_id="g-topics", routes=[{"topic": "a", "task": "x"}]))
    refused = run_topics(config, "--topic", "orders-typo")
    assert refused.returncode == 2
    assert "--topic orders-typo: not a routed topic" in refused.stderr
