"""The command line refuses a bad configuration before touching any service."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from bridge.commands.signals import Stopper

REPO = Path(__file__).resolve().parents[2]

BAD = """
[kafka]
bootstrap_servrs = "127.0.0.1:9092"
group_id = "shop"

[celery]
broker_url = "redis://127.0.0.1:6379/0"

[[routes]]
topic = "orders"
task = "shop.handle_order"
value_format = "xml"
"""


def bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_with_invalid_config_fails_at_start_naming_each_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(BAD)
    result = bridge("run", "--config", str(config))
    assert result.returncode == 2
    assert f"invalid configuration in {config}" in result.stderr
    assert "kafka.bootstrap_servrs: Extra inputs are not permitted" in result.stderr
    assert "kafka.bootstrap_servers: Field required" in result.stderr
    assert "routes[0].value_format: Input should be 'json', 'text' or 'bytes'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_broker_url_that_is_not_redis_fails_at_start(tmp_path: Path) -> None:
    config = tmp_path / "amqp.toml"
    good = BAD.replace("bootstrap_servrs", "bootstrap_servers").replace('"xml"', '"json"')
    config.write_text(good.replace("redis://127.0.0.1:6379/0", "amqp://guest@127.0.0.1//"))
    result = bridge("run", "--config", str(config))
    assert result.returncode == 2
    assert "celery.broker_url: Value error, 'amqp://guest@127.0.0.1//' is not a Redis URL" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_run_without_any_config_says_how_to_give_one() -> None:
    result = bridge("run", env={"BRIDGE_CONFIG": ""})
    assert result.returncode == 2
    assert "pass --config PATH or set BRIDGE_CONFIG" in result.stderr


def test_first_signal_stops_gracefully_second_exits_at_once() -> None:
    stops: list[bool] = []
    exits: list[int] = []
    stopper = Stopper(lambda: stops.append(True), exit_now=exits.append)
    stopper(signal.SIGTERM)
    assert (stops, exits) == ([True], [])
    stopper(signal.SIGINT)
    assert (stops, exits) == ([True], [128 + signal.SIGINT])
