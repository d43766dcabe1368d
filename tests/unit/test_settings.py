from pathlib import Path

import pytest

import bridge.sections
import bridge.settings
from bridge.errors import ConfigError
from bridge.settings import (
    DeadLetterSettings,
    ProduceSettings,
    SendRetrySettings,
    is_redis_url,
    load_settings,
)

MINIMAL = """
[kafka]
bootstrap_servers = "127.0.0.1:9092"
group_id = "shop"

[celery]
broker_url = "redis://127.0.0.1:6379/0"

[[routes]]
topic = "orders"
task = "shop.handle_order"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    route = settings.routes[0]
    assert (route.queue, route.ordered, route.value_format) == ("celery", False, "json")
    assert route.dead_letter_topic("shop") == "orders.shop.dlt"
    assert settings.dead_letter.retries == 3
    assert settings.dead_letter.retry_backoff_ms == 100
    assert settings.dead_letter.retry_backoff_max_ms == 1000


def test_explicit_dlt_topic_wins(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + 'dlt_topic = "orders-dead"\n'))
    assert settings.routes[0].dead_letter_topic("shop") == "orders-dead"


def test_environment_overrides_one_nested_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "broker:19092")
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.kafka.bootstrap_servers == "broker:19092"
    assert settings.kafka.group_id == "shop"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_CONFIG", str(write(tmp_path, MINIMAL)))
    assert load_settings().kafka.group_id == "shop"


def test_no_path_at_all_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--config PATH or set BRIDGE_CONFIG"):
        load_settings()


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(write(tmp_path, "[kafka\n"))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("bootstrap_servers", "bootstrap_servrs"), "kafka.bootstrap_servrs"),
        (('group_id = "shop"', 'group_id = "a b"'), "kafka.group_id"),
        (('task = "shop.handle_order"', 'task = "x"\nordered = "maybe"'), "routes[0].ordered"),
        (('topic = "orders"', 'topic = "bad topic!"'), "routes[0].topic"),
        (
            ('task = "shop.handle_order"', 'task = "x"\non_exhausted = "drop"'),
            "routes[0].on_exhausted",
        ),
        (('task = "shop.handle_order"', 'task = "x"\non_exhausted = "park"'), "ordered = true"),
        (
            ('task = "shop.handle_order"', 'task = "x"\nretry_interval_s = 0'),
            "routes[0].retry_interval_s",
        ),
        (
            ('task = "shop.handle_order"', 'task = "x"\nretry_interval_s = 3\nretry_backoff_s = 2'),
            "retry_interval_s",
        ),
        (("[kafka]", "[ordering]\nstall_timeout_s = 60\n[kafka]"), "ordering.stall_timeout_s"),
        (('task = "shop.handle_order"', 'task = "x"\nvalue_format = 1'), "routes[0].value_format"),
        (('broker_url = "redis://127.0.0.1:6379/0"', ""), "celery.broker_url"),
    ],
)
def test_invalid_key_is_named(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, MINIMAL.replace(*change)))
    assert key in str(info.value)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kafak"):
        load_settings(write(tmp_path, MINIMAL + "\n[kafak]\nx = 1\n"))


def test_topic_routed_twice_is_rejected(tmp_path: Path) -> None:
    twice = MINIMAL + '\n[[routes]]\ntopic = "orders"\ntask = "other"\n'
    with pytest.raises(ConfigError, match="routed twice"):
        load_settings(write(tmp_path, twice))


def test_no_routes_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="routes"):
        load_settings(write(tmp_path, MINIMAL.split("[[routes]]")[0]))


def test_invalid_environment_value_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__MAX_POLL_RECORDS", "zero")
    with pytest.raises(ConfigError, match=r"kafka\.max_poll_records"):
        load_settings(write(tmp_path, MINIMAL))


def test_queue_depth_limits(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + "max_queue_depth = 1000\n"))
    assert settings.routes[0].resume_depth == 500
    settings = load_settings(
        write(tmp_path, MINIMAL + "max_queue_depth = 1000\nresume_queue_depth = 900\n")
    )
    assert settings.routes[0].resume_depth == 900
    default = load_settings(write(tmp_path, MINIMAL)).routes[0]  # Kafka stays the buffer
    assert (default.max_queue_depth, default.resume_depth) == (10_000, 5_000)


def test_resume_depth_must_be_below_max(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]: .*resume_queue_depth"):
        load_settings(write(tmp_path, MINIMAL + "max_queue_depth = 10\nresume_queue_depth = 10\n"))


def test_schedule_threshold_must_stay_well_below_the_visibility_timeout(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'broker_url = "redis://127.0.0.1:6379/0"',
        'broker_url = "redis://127.0.0.1:6379/0"\nvisibility_timeout_s = 10',
    )
    assert load_settings(write(tmp_path, text)).retry.redis_schedule_min_delay_ms == 1000
    with pytest.raises(ConfigError, match=r"retry\.redis_schedule_min_delay_ms .* visibility"):
        load_settings(write(tmp_path, text + "\n[retry]\nredis_schedule_min_delay_ms = 6000\n"))


def test_route_retry_defaults_travel_in_the_envelope(tmp_path: Path) -> None:
    from bridge.record import Envelope, Record, from_task_arg, to_task_arg
    from bridge.routing import Router

    extra = "max_retries = 16\nretry_backoff_s = 2\nretry_backoff_max_s = 3600\n"
    route = Router.from_settings(load_settings(write(tmp_path, MINIMAL + extra))).routes[0]
    assert route.retry_policy == {"max_retries": 16, "retry_backoff": 2, "retry_backoff_max": 3600}
    record = Record("orders", 0, 1, 0, None, b"{}", (), "json")
    envelope = Envelope(record, "shop", "d", retry_policy=route.retry_policy)
    assert from_task_arg(to_task_arg(envelope)).retry_policy == route.retry_policy
    assert (
        Router.from_settings(load_settings(write(tmp_path, MINIMAL))).routes[0].retry_policy is None
    )


def test_transport_options_pass_through_but_not_the_visibility_timeout(tmp_path: Path) -> None:
    sweep = "\n[celery.transport_options]\nunacked_restore_interval = 1\n"
    settings = load_settings(write(tmp_path, MINIMAL.replace("[[routes]]", sweep + "[[routes]]")))
    assert settings.celery.transport_options == {"unacked_restore_interval": 1}
    clash = "\n[celery.transport_options]\nvisibility_timeout = 10\n"
    with pytest.raises(ConfigError, match=r"celery\.transport_options: .*visibility_timeout_s"):
        load_settings(write(tmp_path, MINIMAL.replace("[[routes]]", clash + "[[routes]]")))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ("global_keyprefix = \"x\"", r"celery\.transport_options: .*global_keyprefix is not "),
        ("processing_lease_s = 20", r"processing_lease_s \(20\) must be at least 3 times "
                                    r"unacked_restore_interval \(10 s\)"),
        ("processing_lease_s = 3\nunacked_restore_interval = 2", r"processing_lease_s \(3\)"),
        ("processing_lease_s = \"soon\"", r"processing_lease_s and unacked_restore_interval are "),
    ],
)  # fmt: skip
def test_transport_options_the_workers_cannot_keep_fail_at_start(
    tmp_path: Path, options: str, error: str
) -> None:
    text = MINIMAL.replace("[[routes]]", f"\n[celery.transport_options]\n{options}\n[[routes]]")
    with pytest.raises(ConfigError, match=error):
        load_settings(write(tmp_path, text))
    fine = "processing_lease_s = 3\nunacked_restore_interval = 1"
    text = MINIMAL.replace("[[routes]]", f"\n[celery.transport_options]\n{fine}\n[[routes]]")
    assert load_settings(write(tmp_path, text)).celery.transport_options["processing_lease_s"] == 3


def test_ordered_route_with_its_defaults(tmp_path: Path) -> None:
    text = MINIMAL.replace('task = "shop.handle_order"', 'task = "x"\nordered = true')
    settings = load_settings(write(tmp_path, text))
    route = settings.routes[0]
    assert (route.ordered, route.on_exhausted) == (True, "dead-letter")
    assert (route.max_waiting_per_key, route.max_waiting_per_partition) == (10_000, 100_000)
    assert settings.stall_timeout_ms == 2 * 3600 * 1000  # twice the visibility timeout


def test_parking_ordered_route_with_a_fixed_interval(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'task = "shop.handle_order"',
        'task = "x"\nordered = true\non_exhausted = "park"\nretry_interval_s = 3',
    )
    route = load_settings(write(tmp_path, text)).routes[0]
    assert (route.on_exhausted, route.retry_interval_s) == ("park", 3)


@pytest.mark.parametrize(
    "url", ["amqp://guest:s3cret@localhost//", "sqs://", "localhost:6379", "memory://"]
)
def test_a_broker_url_that_is_not_redis_fails_at_start_naming_the_key(
    tmp_path: Path, url: str
) -> None:
    text = MINIMAL.replace('"redis://127.0.0.1:6379/0"', f'"{url}"')
    with pytest.raises(ConfigError, match=r"celery\.broker_url: .* is not a Redis URL") as err:
        load_settings(write(tmp_path, text))
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h:6380/1", "unix:///run/r.sock"])
def test_redis_urls_are_accepted(tmp_path: Path, url: str) -> None:
    text = MINIMAL.replace('"redis://127.0.0.1:6379/0"', f'"{url}"')
    assert load_settings(write(tmp_path, text)).celery.broker_url == url


def test_the_message_names_the_file_and_each_key_on_a_line_of_its_own(tmp_path: Path) -> None:
    text = MINIMAL.replace('group_id = "shop"', "group_id = 4").replace("shop.handle_order", "")
    path = write(tmp_path, text.replace('task = ""', "task = 3"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).splitlines() == [
        f"invalid configuration in {path}:",
        "  kafka.group_id: Input should be a valid string",
        "  routes[0].task: Input should be a valid string",
    ]


def test_a_check_across_sections_is_named_top_level(tmp_path: Path) -> None:
    text = MINIMAL.replace('"redis://127.0.0.1:6379/0"', '"redis://h/0"\nvisibility_timeout_s = 10')
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text + "\n[retry]\nredis_schedule_min_delay_ms = 6000\n"))
    assert str(info.value).splitlines()[1].startswith("  (top level): Value error, retry.")


@pytest.mark.parametrize(
    ("url", "redis"),
    [
        ("redis://h:6379/0", True),
        ("REDISS://h", True),
        ("unix:///run/redis.sock", True),
        ("redis://u:p@h/0?name=a://b", True),  # "://" again later in the URL
        ("amqp://h//", False),
        ("redis", False),
        ("h:6379", False),
    ],
)
def test_is_redis_url_reads_the_scheme(url: str, redis: bool) -> None:
    assert is_redis_url(url) is redis


@pytest.mark.parametrize("name", bridge.sections.__all__)
def test_each_section_name_imports_from_sections_and_settings(name: str) -> None:
    """``bridge.sections`` is a package of one module per part; both old import paths hold."""
    assert getattr(bridge.sections, name) is getattr(bridge.settings, name)
    assert name in bridge.settings.__all__


def test_the_producers_sections_share_their_keys_and_say_whose_retries() -> None:
    dead_letter, produce = DeadLetterSettings.model_fields, ProduceSettings.model_fields
    assert list(dead_letter) == list(produce) == list(SendRetrySettings.model_fields)
    assert dead_letter["retries"].description == (
        "The dead-letter producer's retries on retryable Kafka errors."
    )
    assert produce["retries"].description == "`bridge.produce`'s retries on retryable Kafka errors."
    assert (DeadLetterSettings().retries, ProduceSettings().retries) == (3, 3)
