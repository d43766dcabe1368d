"""The public surface, pinned as literals (issue 17, step 1): what users import, the
configuration keys, the command line, the Redis keys and the Prometheus metrics. Moving modules
must change none of it; a test here fails when a name is renamed, dropped or added without
updating the snapshot.

Behaviour is tested elsewhere; these tables only say what the names are.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, get_args

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

import bridge
from bridge import keys
from bridge.backends.redis.fetch import PROCESSING_INDEX, processing_key
from bridge.backends.redis.waiting import RedisCounts
from bridge.cli import _parser
from bridge.consumer.metrics import BridgeMetrics, redis_families
from bridge.settings import CONFIG_ENV, BridgeSettings
from bridge.worker.metrics import WorkerMetrics

REPO = Path(__file__).resolve().parents[2]

# -- what users import -------------------------------------------------------------------------

PUBLIC_NAMES = {  # name -> what it is (an exception: its public base class)
    "BatchFailed": "exception(BridgeError)",
    "BridgeError": "exception(Exception)",
    "BridgeSettings": "class",
    "ConfigError": "exception(BridgeError)",
    "DeadLetterError": "exception(BridgeError)",
    "PermanentError": "exception(BridgeError)",
    "ProduceError": "exception(BridgeError)",
    "ProduceRefusedError": "exception(ProduceError)",
    "Produced": "class",
    "PublishError": "exception(BridgeError)",
    "Record": "class",
    "RecordBatchTask": "class",
    "RecordTask": "class",
    "UndecodableRecordError": "exception(PermanentError)",
    "configure": "function",
    "load_settings": "function",
    "produce": "function",
    "produce_async": "function",
}

# Where users and the repo's own files name a module rather than a top-level name: these must
# keep working (as shims, if the module moves).
IMPORTED_BY_PATH = {
    "bridge.worker_transport": ("install",),  # celeryconfig.py, error messages
    "bridge.worker": ("settings",),  # tasks/
    "bridge.worker_metrics": ("install",),  # tasks/__init__.py
    "bridge.produce_task": ("produce_task",),  # tasks/__init__.py
    "bridge.logs": ("format_from_env", "hold_repeats", "use_format"),  # tasks/__init__.py
    "bridge.redact": ("redact_handlers",),  # tasks/__init__.py
    "bridge.settings": ("load_settings",),  # celeryconfig.py
}


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(bridge.__all__) == sorted([*PUBLIC_NAMES, "__version__"]), "bridge.__all__"
    assert bridge.__version__ == "0.1.0"


def kind(value: object) -> str:
    """What a public name is, as :data:`PUBLIC_NAMES` writes it."""
    if isinstance(value, type) and issubclass(value, BaseException):
        return f"exception({value.__mro__[1].__name__})"
    return "class" if isinstance(value, type) else "function" if callable(value) else "value"


@pytest.mark.parametrize("name", sorted(PUBLIC_NAMES))
def test_each_public_name_resolves(name: str) -> None:
    """Through the lazy ``__getattr__`` (PEP 562) too, to the object under its own name."""
    value = getattr(bridge, name)
    assert (value.__name__, kind(value)) == (name, PUBLIC_NAMES[name]), f"bridge.{name}"


def test_importing_bridge_loads_no_client_library() -> None:
    """The names that need Celery, Kafka or Redis load on first use (``bridge/__init__.py``)."""
    clients = ["celery", "kafka", "kombu", "redis"]
    code = f"import sys, bridge; print([m for m in {clients!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", "loaded by `import bridge`"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'bridge' has no attribute 'Nope'"):
        bridge.Nope  # noqa: B018


@pytest.mark.parametrize("module", sorted(IMPORTED_BY_PATH))
def test_modules_named_in_user_code_keep_their_names(module: str) -> None:
    found = importlib.import_module(module)
    missing = [name for name in IMPORTED_BY_PATH[module] if not hasattr(found, name)]
    assert not missing, f"{module} lost {missing}"


def test_the_task_names_workers_register() -> None:
    """``bridge.produce_task`` (``include``-d by name) registers ``bridge.produce`` in an app."""
    importlib.import_module("bridge.produce_task")
    app = Celery("surface", set_as_current=False)
    assert "bridge.produce" in app.tasks


def test_the_console_script_runs_the_cli() -> None:
    [script] = entry_points(group="console_scripts", name="kafka-celery-bridge")
    assert script.value == "bridge.__main__:main"


# -- the configuration file ------------------------------------------------------------------

CONFIG_KEYS = {  # TOML section -> its keys (BRIDGE_SECTION__KEY overrides each)
    "kafka": (
        "bootstrap_servers", "group_id", "client_id", "group_instance_id", "auto_offset_reset",
        "max_poll_records", "poll_timeout_ms", "session_timeout_ms", "max_poll_interval_ms",
        "request_timeout_ms", "shutdown_timeout_ms", "security_protocol", "sasl_mechanism",
        "sasl_username", "sasl_password", "sasl_password_file", "ssl_cafile", "ssl_certfile",
        "ssl_keyfile", "ssl_password", "ssl_password_file", "ssl_check_hostname",
    ),
    "celery": (
        "broker_url", "broker_username", "broker_password", "broker_password_file",
        "sentinel_password", "sentinel_password_file", "publish_retry_backoff_ms",
        "publish_retry_backoff_max_ms", "enqueue_dedup_ttl_s", "min_replicas_to_accept",
        "replica_ack_timeout_ms", "argsrepr_value_bytes", "visibility_timeout_s",
        "transport_options",
    ),
    "dead_letter": ("retries", "retry_backoff_ms", "retry_backoff_max_ms", "delivery_timeout_ms"),
    "produce": ("retries", "retry_backoff_ms", "retry_backoff_max_ms", "delivery_timeout_ms"),
    "retry": (
        "redis_schedule_min_delay_ms", "scheduler_interval_ms", "attempt_history",
        "attempt_history_ttl_s",
    ),
    "ordering": ("stall_timeout_s", "watchdog_interval_ms"),
    "metrics": ("port", "addr", "worker_port", "worker_addr", "redis_interval_s"),
    "breaker": (
        "dead_letter_ratio", "window_s", "min_records", "cool_down_s", "probe_records",
        "check_interval_ms",
    ),
    "routes": (  # [[routes]]
        "topic", "task", "queue", "ordered", "value_format", "dlt_topic", "max_queue_depth",
        "resume_queue_depth", "max_retries", "retry_backoff_s", "retry_backoff_max_s",
        "retry_jitter", "retry_interval_s", "on_exhausted", "max_waiting_per_key",
        "max_waiting_per_partition", "batch_size", "batch_max_wait_ms",
    ),
}  # fmt: skip


def test_the_configuration_keys() -> None:
    sections = BridgeSettings.model_fields
    assert list(sections) == list(CONFIG_KEYS), "sections"
    for name, expected in CONFIG_KEYS.items():
        [model] = [a for a in (sections[name].annotation, *get_args(sections[name].annotation))
                   if isinstance(a, type) and issubclass(a, BaseModel)]  # fmt: skip
        assert tuple(model.model_fields) == expected, f"the keys of [{name}]"
    assert CONFIG_ENV == "BRIDGE_CONFIG"


# -- the command line --------------------------------------------------------------------------

COMMON = {
    "-h/--help": "flag",
    "--config": "value",
    "--log-level": "value choices=DEBUG|INFO|WARNING|ERROR default=INFO",
    "--log-format": "value choices=text|json",
}
COMMANDS: dict[str, dict[str, str]] = {
    "run": {
        **COMMON,
        "--metrics-port": "value",
        "--metrics-addr": "value",
    },
    "status": {**COMMON, "--json": "flag"},
    "release": {
        **COMMON,
        "--topic": "value required",
        "--key": "value",
        "--key-b64": "value",
        "--partition": "value",
        "--skip": "flag",
    },
    "pause": {**COMMON, "--topic": "repeated", "--reason": "value default="},
    "resume": {**COMMON, "--topic": "repeated"},
    "replay": {
        **COMMON,
        "--topic": "value",
        "--dlt-topic": "value",
        "--parked": "flag",
        "--to": "value choices=source|task default=source",
        "--since": "value",
        "--until": "value",
        "--reason": "repeated choices=exhausted|non-retryable|undecodable|unroutable",
        "--exception": "repeated",
        "--key": "value",
        "--key-b64": "value",
        "--max-replays": "value default=3",
        "--dry-run": "flag",
        "--replay-group": "value",
        "--from-beginning": "flag",
        "--json": "flag",
        "--no-progress": "flag",
    },
    "topics": {
        **COMMON,
        "--partitions": "value default=-1",
        "--replication-factor": "value default=-1",
        "--topic": "repeated",
    },
}
COMMANDS["console"] = {
    **COMMON,
    "--host": "value default=127.0.0.1",
    "--port": "value default=8470",
    "--password-file": "value",
    "--read-only-password-file": "value",
    "--refresh-s": "value default=5",
    "--secure-cookie": "flag",
}
POSITIONAL = {"topics": ["action required choices=create"]}  # python -m bridge topics create
ONE_OF = {  # mutually exclusive options ("required": exactly one must be given)
    "run": [],
    "status": [],
    "release": ["--key|--key-b64|--partition required"],
    "pause": [],
    "resume": [],
    "replay": ["--topic|--dlt-topic", "--key|--key-b64"],
    "topics": [],
    "console": [],
}


def option(action: argparse.Action) -> str:
    """An option as the tables above write it: how it takes a value, and what limits it."""
    kind = "flag" if action.nargs == 0 else "value"
    if isinstance(action, argparse._AppendAction):
        kind = "repeated"
    parts = [kind]
    if action.required:
        parts.append("required")
    if action.choices is not None:
        parts.append("choices=" + "|".join(map(str, action.choices)))
    if action.default not in (None, False, argparse.SUPPRESS):
        parts.append(f"default={action.default}")
    return " ".join(parts)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [commands] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert commands.required, "a command must be given"
    return dict(commands.choices)


def test_the_commands() -> None:
    assert list(subcommands()) == list(COMMANDS), "python -m bridge COMMAND"
    assert [a.option_strings for a in _parser()._actions if a.option_strings] == [
        ["-h", "--help"]
    ], "options before the command"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_commands_options(command: str) -> None:
    parser = subcommands()[command]
    found = {"/".join(a.option_strings): option(a) for a in parser._actions if a.option_strings}
    assert found == COMMANDS[command], f"the options of `{command}`"
    positional = [f"{a.dest} {option(a).removeprefix('value ')}"
                  for a in parser._get_positional_actions()]  # fmt: skip
    assert positional == POSITIONAL.get(command, []), f"the positional arguments of `{command}`"
    groups = [
        "|".join(a.option_strings[0] for a in g._group_actions) + (" required" * g.required)
        for g in parser._mutually_exclusive_groups
    ]
    assert groups == ONE_OF[command], f"the mutually exclusive options of `{command}`"


def help_text(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args, "--help"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["", "replay"])
def test_python_m_bridge_help_is_this_parsers(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m bridge [COMMAND] --help`` prints the help of the parser pinned above (one
    command stands for all: a process start costs ~1 s)."""
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps at the terminal's width
    parser = subcommands()[command] if command else _parser()
    result = help_text(*filter(None, [command]))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == parser.format_help()
    if not command:
        assert "{run,status,release,pause,resume,replay,topics,console}" in result.stdout


# -- Redis keys --------------------------------------------------------------------------------

KEY = b"\xfb\xffk"  # base64url: "-_9r" (standard base64 would have "+/")
REDIS_KEYS: list[tuple[str, Callable[..., Any], tuple[Any, ...], Any]] = [
    ("group_prefix", keys.group_prefix, ("shop",), "bridge:shop:"),
    ("published_watermark", keys.published_watermark, ("shop", "orders", 3),
     "bridge:shop:published:orders:3"),
    ("published_watermark, topic id", keys.published_watermark,
     ("shop", "orders", 3, "AAAAAAAAAAAAAAAAAAAAAA"),
     "bridge:shop:published:orders:3:AAAAAAAAAAAAAAAAAAAAAA"),
    ("delayed_retries", keys.delayed_retries, ("shop",), "bridge:shop:retries:delayed"),
    ("gathered_retries", keys.gathered_retries, ("shop",), "bridge:shop:retries:gathered"),
    ("gathered_retry_envelopes", keys.gathered_retry_envelopes, ("shop",),
     "bridge:shop:retries:gathered:envelopes"),
    ("pending_dead_letters", keys.pending_dead_letters, ("shop",),
     "bridge:shop:dead-letters:pending"),
    ("parked_dead_letters", keys.parked_dead_letters, ("shop",),
     "bridge:shop:dead-letters:parked"),
    ("outcomes", keys.outcomes, ("shop", "orders"), "bridge:shop:outcomes:orders"),
    ("unroutable", keys.unroutable, ("shop",), "bridge:shop:unroutable"),
    ("worker_registration", keys.worker_registration, ("w1@host",),
     "bridge-workers:w1@host"),
    ("worker_registrations_pattern", keys.worker_registrations_pattern, (),
     "bridge-workers:*"),
    ("breaker_resumes", keys.breaker_resumes, ("shop",), "bridge:shop:breaker:resume"),
    ("console_audit", keys.console_audit, ("shop",), "bridge:shop:console:audit"),
    ("console_replayed", keys.console_replayed, ("shop",), "bridge:shop:console:replayed"),
    ("ordered_queue, key", keys.ordered_queue, ("shop", "orders", KEY, 3),
     "bridge:shop:ordered:q:orders:k:-_9r"),
    ("ordered_queue, no key", keys.ordered_queue, ("shop", "orders", None, 3),
     "bridge:shop:ordered:q:orders:p:3"),
    ("ordered_key_of, key", keys.ordered_key_of, ("bridge:shop:ordered:q:orders:k:-_9r",),
     ("orders", KEY, None)),
    ("ordered_key_of, no key", keys.ordered_key_of, ("bridge:shop:ordered:q:orders:p:3",),
     ("orders", None, 3)),
    ("ordered_waiting", keys.ordered_waiting, ("shop", "orders", 3),
     "bridge:shop:ordered:waiting:orders:3"),
    ("ordered_waiting_pattern", keys.ordered_waiting_pattern, ("shop",),
     "bridge:shop:ordered:waiting:*"),
    ("attempts", keys.attempts, ("shop", "shop:orders:0:7"),
     "bridge:shop:attempts:shop:orders:0:7"),
    ("paused_routes", keys.paused_routes, ("shop",), "bridge:shop:routes:paused"),
    ("ordered_heads", keys.ordered_heads, ("shop",), "bridge:shop:ordered:heads"),
    ("ordered_failing", keys.ordered_failing, ("shop",), "bridge:shop:ordered:failing"),
    ("ordered_parked", keys.ordered_parked, ("shop",), "bridge:shop:ordered:parked"),
    ("member", keys.member, ("shop", "bridge-1@host:42"),
     "bridge:shop:members:bridge-1@host:42"),
    ("members_pattern", keys.members_pattern, ("shop",), "bridge:shop:members:*"),
    ("replay_namespace", keys.replay_namespace, ("shop", "shop.replay"),
     "shop:replay:shop.replay"),
    ("a replay's watermark", lambda: keys.published_watermark(
        keys.replay_namespace("shop", "shop.replay"), "orders.shop.dlt", 0), (),
     "bridge:shop:replay:shop.replay:published:orders.shop.dlt:0"),
    # The workers' reliable fetch (bridge.backends.redis.fetch): a processing list per channel and
    # queue.
    ("processing_key", processing_key, ("0123456789abcdef0123456789abcdef", "celery"),
     "_kombu.processing.0123456789abcdef0123456789abcdef.celery"),
    ("PROCESSING_INDEX", lambda: PROCESSING_INDEX, (), "_kombu.processing_index"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("function", "args", "expected"),
    [pytest.param(f, args, expected, id=name) for name, f, args, expected in REDIS_KEYS],
)
def test_redis_key_names(
    function: Callable[..., Any], args: tuple[Any, ...], expected: Any
) -> None:
    assert function(*args) == expected


def test_every_key_function_is_in_the_table() -> None:
    functions = {
        name for name, value in vars(keys).items()
        if callable(value) and getattr(value, "__module__", None) == "bridge.keys"
        and "__mutmut_" not in name  # the copies `make mutation` adds beside each function
    }  # fmt: skip
    pinned = {name.split(",")[0] for name, *_ in REDIS_KEYS}
    assert functions <= pinned, f"bridge.keys functions not pinned: {sorted(functions - pinned)}"
    assert (keys.PREFIX, keys.WORKERS_PREFIX) == ("bridge", "bridge-workers:")


# -- Prometheus metrics ------------------------------------------------------------------------

BRIDGE_METRICS = {  # family name (a counter's samples add _total) -> (type, label names)
    "bridge_records_consumed": ("counter", ("topic",)),
    "bridge_tasks_published": ("counter", ()),
    "bridge_records_appended": ("counter", ()),
    "bridge_records_skipped": ("counter", ()),
    "bridge_records_refused": ("counter", ("full",)),
    "bridge_records_committed": ("counter", ("topic",)),
    "bridge_dead_letters": ("counter", ("topic", "reason", "deferred")),
    "bridge_publish_failures": ("counter", ()),
    "bridge_commit_failures": ("counter", ()),
    "bridge_publish_duration_seconds": ("histogram", ()),
    "bridge_flood_breaker_trips": ("counter", ("topic",)),
    "bridge_commit_duration_seconds": ("histogram", ()),
    "bridge_consumer_lag_records": ("gauge", ("topic", "partition")),
    "bridge_uncommitted_records": ("gauge", ("topic", "partition")),
    "bridge_partition_paused": ("gauge", ("topic", "partition", "reason")),
    "bridge_assigned_partitions": ("gauge", ()),
    "bridge_celery_broker_down": ("gauge", ()),
    "bridge_flood_breaker_state": ("gauge", ("topic",)),
    "bridge_flood_dead_letter_ratio": ("gauge", ("topic",)),
}
REDIS_METRICS = {  # read from Redis at scrape time: family name -> (type, label names)
    "bridge_delayed_retries_waiting": ("gauge", ("group",)),
    "bridge_dead_letters_waiting": ("gauge", ("group", "state")),
    "bridge_ordered_keys_out": ("gauge", ("group",)),
    "bridge_ordered_keys_retrying": ("gauge", ("group",)),
    "bridge_ordered_keys_parked": ("gauge", ("group",)),
    "bridge_ordered_records_waiting": ("gauge", ("group", "topic", "partition")),
}
WORKER_METRICS = {
    "bridge_worker_task_outcomes": ("counter", ("task", "outcome", "reason")),
    "bridge_worker_handler_duration_seconds": ("histogram", ("task", "outcome")),
    "bridge_worker_retries_scheduled": ("counter", ("task", "via")),
    "bridge_worker_dead_letter_writes": ("counter", ("task", "reason", "result")),
}


def declared(owner: object, registry: CollectorRegistry) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metrics ``owner`` holds: family name -> (type, label names). Label names are read
    from prometheus_client's ``_labelnames``: a metric without samples shows none publicly."""
    found = {}
    for value in vars(owner).values():
        metric = getattr(value, "gauge", value)  # a PartitionGauge wraps its Gauge
        if isinstance(metric, MetricWrapperBase):
            found[metric._name] = (str(metric._type), tuple(metric._labelnames))
    registered = {family.name: family.type for family in registry.collect()}
    assert registered == {name: kind for name, (kind, _) in found.items()}, "unheld metrics"
    return found


def test_the_bridges_metrics() -> None:
    registry = CollectorRegistry()
    assert declared(BridgeMetrics(registry), registry) == BRIDGE_METRICS


def test_the_workers_metrics() -> None:
    registry = CollectorRegistry()
    assert declared(WorkerMetrics(registry), registry) == WORKER_METRICS


def test_the_metrics_read_from_redis() -> None:
    counts = RedisCounts(1, 2, 3, 4, 5, 6, {("orders", 0): 7})
    found = {}
    for family in redis_families("shop", counts):
        labels = {tuple(sample.labels) for sample in family.samples}
        assert len(labels) == 1, f"{family.name}: samples labelled {labels}"
        found[family.name] = (family.type, labels.pop())
    assert found == REDIS_METRICS
