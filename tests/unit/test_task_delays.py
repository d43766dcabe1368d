from datetime import UTC, datetime, timedelta

import pytest

from bridge.worker.task import _delay_s


def test_countdown_wins() -> None:
    assert _delay_s(2.5, None, 180) == 2.5
    assert _delay_s(-1, None, 180) == 0.0


def test_eta_becomes_a_delay() -> None:
    eta = datetime.now(UTC) + timedelta(seconds=30)
    assert _delay_s(None, eta, 180) == pytest.approx(30, abs=0.5)
    naive_utc = eta.replace(tzinfo=None)
    assert _delay_s(None, naive_utc, 180) == pytest.approx(30, abs=0.5)


def test_default_retry_delay_otherwise() -> None:
    assert _delay_s(None, None, 180) == 180.0
    assert _delay_s(None, None, None) == 0.0
