"""Replicated acceptance's pure parts: the settings, the accept decision, the start-up warning."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.backends.redis.replicas import shortfall, startup_warning
from bridge.settings import CelerySettings

URL = "redis://localhost:6379/0"


def test_default_is_no_wait() -> None:
    celery = CelerySettings(broker_url=URL)
    assert celery.min_replicas_to_accept == 0
    assert celery.replica_ack_timeout_ms == 1000


@pytest.mark.parametrize(
    "bad", [{"min_replicas_to_accept": -1}, {"replica_ack_timeout_ms": 0},
            {"replica_ack_timeout_ms": 60_001}],
)  # fmt: skip
def test_refused_settings(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        CelerySettings.model_validate({"broker_url": URL, **bad})


@pytest.mark.parametrize(("wanted", "got"), [(0, 0), (1, 1), (1, 2), (2, 2)])
def test_enough_replicas_accept(wanted: int, got: int) -> None:
    assert shortfall(wanted, got, 1000) is None


def test_too_few_replicas_name_the_setting_wanted_and_got() -> None:
    why = shortfall(2, 1, 250)
    assert why is not None
    assert "celery.min_replicas_to_accept is 2" in why
    assert "only 1 replica(s)" in why
    assert "250 ms" in why


def test_startup_warning() -> None:
    assert startup_warning(1, 1) is None
    assert startup_warning(0, 0) is None
    warning = startup_warning(1, 0)
    assert warning is not None
    assert "celery.min_replicas_to_accept is 1" in warning
    assert "0 connected replica(s)" in warning
