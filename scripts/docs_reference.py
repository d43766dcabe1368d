"""The documentation's reference pages, generated from the code so that they cannot drift.

An MkDocs hook (``hooks:`` in mkdocs.yml): a page holding one of the markers below gets the
marker replaced by the generated Markdown when the site is built.

- ``<!-- reference: configuration -->``: every key of the settings model
  (:class:`bridge.settings.BridgeSettings`) with its type, default, limits, environment variable
  and description (the field's ``description``, else :data:`DESCRIPTIONS`);
- ``<!-- reference: cli -->``: every command and flag of the argument parser
  (:func:`bridge.cli._parser`);
- ``<!-- reference: metrics -->``: every Prometheus metric the bridge, its workers and
  ``bridge.produce`` define, from the metric objects themselves;
- ``<!-- reports: latest -->``: links to the reports ``make chaos`` and ``make bench`` wrote
  (``bench/results/*.md``), which the build adds to the site under ``reports/results/``.

``tests/unit/test_docs_reference.py`` checks that the pages name every key, command, flag and
metric, and that every key has a description.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RESULTS_URI = "reports/results"

# Descriptions of the keys whose field has none (``Field(description=...)`` wins over these).
DESCRIPTIONS: dict[str, str] = {
    "kafka.bootstrap_servers": "The Kafka brokers, comma-separated `host:port`.",
    "kafka.group_id": "The bridge's consumer group; it also namespaces every Redis key "
    "(`bridge:{group_id}:…`), the task ids and the default DLT names. `[A-Za-z0-9._-]+`.",
    "kafka.client_id": "Kafka client id of the bridge's clients (`bridge.produce` adds "
    "`-produce`).",
    "kafka.group_instance_id": "Static membership (KIP-345): a restarted bridge takes its "
    "partitions back at once instead of after the session timeout. Unique per bridge process.",
    "kafka.auto_offset_reset": "Where a group without committed offsets starts: `earliest` or "
    "`latest`.",
    "kafka.max_poll_records": "Records at most per poll (one poll batch is one Redis round trip).",
    "kafka.poll_timeout_ms": "How long one poll waits for records.",
    "kafka.session_timeout_ms": "Kafka's consumer session timeout.",
    "kafka.max_poll_interval_ms": "Kafka's `max.poll.interval.ms`.",
    "kafka.request_timeout_ms": "Kafka's request timeout; also how long `run` waits for a broker "
    "that refuses the connection before it says so.",
    "kafka.shutdown_timeout_ms": "Bound on the final commit and on leaving the group when `run` "
    "stops.",
    "kafka.security_protocol": "`PLAINTEXT`, `SASL_PLAINTEXT`, `SASL_SSL` or `SSL` (see "
    "[Security](../guides/security.md)).",
    "kafka.sasl_mechanism": "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; needed by the SASL "
    "protocols.",
    "kafka.sasl_username": "The SASL user.",
    "kafka.sasl_password": "The SASL password (or `sasl_password_file`, or the environment).",
    "kafka.sasl_password_file": "A file holding the SASL password, read at start (a trailing "
    "newline is dropped).",
    "kafka.ssl_cafile": "The CA that signed the brokers' certificates (default: the system's CAs).",
    "kafka.ssl_certfile": "A client certificate (mutual TLS), with `ssl_keyfile`.",
    "kafka.ssl_keyfile": "The client certificate's key.",
    "kafka.ssl_password": "The client key's password, if any.",
    "kafka.ssl_password_file": "A file holding the client key's password.",
    "kafka.ssl_check_hostname": "The broker's certificate must name its host.",
    "celery.broker_url": "The Celery broker: `redis://`, `rediss://` or `unix://`, or Sentinels "
    "as kombu reads them (`sentinel://:pw@s1:26379/0;sentinel://s2:26379/0`, with "
    "`transport_options.master_name`; the URL's password is the primary's). The bridge "
    "publishes there and keeps its state there; workers take it from here "
    "(`bridge.configure(app)`).",
    "celery.broker_username": "A Redis 6+ ACL user, put into the broker URL (without it: the "
    "default user).",
    "celery.broker_password": "The Redis password, put into the broker URL (or "
    "`broker_password_file`, or the environment).",
    "celery.broker_password_file": "A file holding the Redis password, read at start.",
    "celery.sentinel_password": "The Sentinels' own password (a `sentinel://` broker URL only; "
    "or `sentinel_password_file`, or the environment).",
    "celery.sentinel_password_file": "A file holding the Sentinels' password, read at start.",
    "celery.publish_retry_backoff_ms": "The bridge's first backoff while the broker is "
    "unreachable...",
    "celery.publish_retry_backoff_max_ms": "...doubling up to this cap.",
    "celery.enqueue_dedup_ttl_s": "How long a partition's published watermark (the exactly-once "
    "enqueue) lives.",
    "celery.visibility_timeout_s": "The broker's visibility timeout; the workers get it from "
    "here too. Keep it above the longest task, dead-letter write included.",
    "celery.transport_options": "More Redis transport options for the workers: kombu's (e.g. "
    "`unacked_restore_interval`, s between sweeps, also the workers' heartbeat) and the "
    "workers' transport's: `processing_lease_s` (default 60: a worker silent this long, what it "
    "fetched goes back to its queue; at least 3 times `unacked_restore_interval`) and "
    "`multi_key_block_s` (default 0.1: a worker on several queues, idle, waits this long per "
    "queue); `master_name` (required with a `sentinel://` broker URL: the name the Sentinels "
    "monitor the primary under). `visibility_timeout` and `global_keyprefix` are refused.",
    "retry.redis_schedule_min_delay_ms": "Retries delayed this long or more wait in Redis, not "
    "in a worker's memory; at most half of `celery.visibility_timeout_s`.",
    "retry.scheduler_interval_ms": "How often the bridge moves due retries to their queues.",
    "ordering.stall_timeout_s": "A head silent this long is published again (default: twice "
    "`celery.visibility_timeout_s`; must exceed it).",
    "ordering.watchdog_interval_ms": "How often the bridge looks for stalled heads.",
    "dead_letter.retries": "The dead-letter producer's retries on retryable Kafka errors.",
    "dead_letter.retry_backoff_ms": "Its first backoff, doubling after each retry...",
    "dead_letter.retry_backoff_max_ms": "...up to this cap.",
    "dead_letter.delivery_timeout_ms": "Bound on one write attempt, connecting included.",
    "produce.retries": "`bridge.produce`'s retries on retryable Kafka errors.",
    "produce.retry_backoff_ms": "Its first backoff, doubling after each retry...",
    "produce.retry_backoff_max_ms": "...up to this cap.",
    "produce.delivery_timeout_ms": "Bound on one write attempt, connecting included.",
    "metrics.port": "The bridge's `/metrics` port (`--metrics-port` wins), e.g. 9464; 0: off.",
    "metrics.addr": "The bridge's `/metrics` address (`--metrics-addr` wins).",
    "metrics.worker_port": "Each worker's `/metrics` port, e.g. 9465 (one per worker on a "
    "host: set it per worker with `BRIDGE_METRICS__WORKER_PORT`); 0: off.",
    "metrics.worker_addr": "The workers' `/metrics` address.",
    "metrics.redis_interval_s": "A scrape reads the group's counts in Redis at most this often.",
    "breaker.dead_letter_ratio": "Turns the dead-letter flood breaker on: pause a route when "
    "more than this share of its records finished in the window were dead-lettered.",
    "breaker.window_s": "The window the ratio is taken over.",
    "breaker.min_records": "Records at least finished in the window before the breaker opens.",
    "breaker.cool_down_s": "How long the breaker stays open before a probe.",
    "breaker.probe_records": "Records the probe lets through.",
    "breaker.check_interval_ms": "How often the bridge reads the counts in Redis.",
    "routes.topic": "The Kafka topic.",
    "routes.task": "The Celery task name its records go to (any registered task; the bridge "
    "never imports it).",
    "routes.queue": "The Celery queue.",
    "routes.ordered": "Per-key order: records of one key run one at a time, in offset order, and "
    "only a failing key waits.",
    "routes.value_format": "How the value is decoded: `json`, `text` or `bytes`.",
    "routes.dlt_topic": "The dead-letter topic (default: `{topic}.{group_id}.dlt`).",
    "routes.max_queue_depth": "Backpressure: pause the route's partitions at this Celery queue "
    "depth...",
    "routes.resume_queue_depth": "...and resume them at this one (default: half of "
    "`max_queue_depth`).",
    "routes.max_retries": "Retry default for this route's records (a task's own options win).",
    "routes.retry_backoff_s": "Retry default: exponential backoff factor in seconds, as Celery's "
    "`retry_backoff`.",
    "routes.retry_backoff_max_s": "Retry default: the backoff's cap.",
    "routes.retry_jitter": "Retry default: jitter on the backoff.",
    "routes.retry_interval_s": "Retry default: a fixed delay instead of `retry_backoff_s`.",
    "routes.on_exhausted": "Ordered routes: `dead-letter` (and go on with the key) or `park` (the "
    "key stops until `release`).",
    "routes.max_waiting_per_key": "Ordered routes: pause the partition when one key has this "
    "many records waiting...",
    "routes.max_waiting_per_partition": "...or the partition this many in key FIFOs.",
}

# What flags whose parser gives no help do (``help=`` in bridge/cli.py wins over these).
FLAG_HELP: dict[str, str] = {
    "--log-level": "the level of the log lines",
    "release --topic": "the ordered route's topic",
}

TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}


# -- configuration ------------------------------------------------------------------------------


def sections() -> Iterator[tuple[str, type[BaseModel]]]:
    """``(section name, its model)`` for every section of the settings, in the model's order."""
    from bridge.settings import BridgeSettings

    for name, field in BridgeSettings.model_fields.items():
        annotation = field.annotation
        candidates = (annotation, *typing.get_args(annotation))
        [model] = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
        yield name, model


def description(section: str, key: str, field: FieldInfo) -> str | None:
    """A key's description: the field's own, else the one in :data:`DESCRIPTIONS`."""
    return field.description or DESCRIPTIONS.get(f"{section}.{key}")


def undescribed() -> list[str]:
    """Every ``section.key`` without a description (the tests want none)."""
    return [
        f"{section}.{key}"
        for section, model in sections()
        for key, field in model.model_fields.items()
        if not description(section, key, field)
    ]


def type_name(annotation: Any) -> str:
    """A settings type as the reference writes it: ``integer``, ``"json" | "text"``, ..."""
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f'`"{v}"`' for v in typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(type_name(a) for a in parts)
    if typing.get_origin(annotation) is dict:
        return "table"
    if getattr(annotation, "__name__", "") == "SecretStr":
        return "secret string"
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(field: FieldInfo) -> str:
    """A field's default in TOML's terms (``required``, ``unset``, ``true``, ``"celery"``...)."""
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "`{}`"
    value = field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def limits_text(field: FieldInfo) -> str:
    """A field's constraints (``>= 1``, ``1 to 65535 chars``...) from its pydantic metadata."""
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=",
             "pattern": "matches"}  # fmt: skip
    found = []
    for item in field.metadata:
        for attr, word in words.items():
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{word} `{value}`")
    return ", ".join(found)


def configuration_reference() -> str:
    """Markdown: a table per section of the settings, one row per key."""
    out = []
    for section, model in sections():
        table = "[[routes]]" if section == "routes" else f"[{section}]"
        out += [f"## `{table}`", ""]
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            out += [" ".join(doc.split()), ""]
        out += ["| key | type | default | limits | description |", "|---|---|---|---|---|"]
        for key, field in model.model_fields.items():
            text = description(section, key, field) or ""
            if section != "routes":
                text += f" Environment: `BRIDGE_{section.upper()}__{key.upper()}`."
            row = (f"`{key}`", type_name(field.annotation), default_text(field),
                   limits_text(field), _cell(text))  # fmt: skip
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` would end the cell."""
    return text.replace("|", "\\|")


# -- command line -------------------------------------------------------------------------------


def subcommands() -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """``name -> (help, parser)`` for every command of ``python -m bridge``."""
    from bridge.cli import _parser

    [action] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {name: (helps.get(name, ""), parser) for name, parser in action.choices.items()}


def flag_help(command: str, action: argparse.Action) -> str:
    """What a flag does: its parser's help, else :data:`FLAG_HELP` (by ``"command --flag"``,
    then ``"--flag"``)."""
    name = action.option_strings[-1]
    return action.help or FLAG_HELP.get(f"{command} {name}") or FLAG_HELP.get(name, "")


def unhelped() -> list[str]:
    """Every ``command --flag`` that says nothing about itself (the tests want none)."""
    return [
        f"{command} {action.option_strings[-1]}"
        for command, (_, parser) in subcommands().items()
        for action in parser._actions
        if action.option_strings and not flag_help(command, action)
    ]


def flag_row(command: str, action: argparse.Action) -> str:
    """One flag as a table row: its names and value, and what it does."""
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs != 0:
        value = action.metavar or action.dest.upper()
        if action.choices is not None:
            value = "{" + ",".join(map(str, action.choices)) + "}"
        names += f" `{value}`"
    notes = []
    if action.required:
        notes.append("required")
    if isinstance(action, argparse._AppendAction):
        notes.append("repeatable")
    if action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0:
        notes.append(f"default `{action.default}`")
    text = _cell(flag_help(command, action))
    if notes:
        text += f" ({', '.join(notes)})"
    return f"| {names} | {text} |"


def cli_reference() -> str:
    """Markdown: each command's usage and a table of its flags."""
    out = []
    for name, (summary, parser) in subcommands().items():
        parser.prog = f"kafka-celery-bridge {name}"
        out += [f"## `{name}`", "", summary[:1].upper() + summary[1:] + ".", ""]
        out += ["```text", parser.format_usage().strip(), "```", ""]
        out += ["| flag | what it does |", "|---|---|"]
        out += [flag_row(name, a) for a in parser._actions if a.option_strings]
        for group in parser._mutually_exclusive_groups:
            flags = ", ".join(f"`{a.option_strings[0]}`" for a in group._group_actions)
            rule = "exactly one of" if group.required else "at most one of"
            out += ["", f"Give {rule} {flags}."]
        out.append("")
    return "\n".join(out)


# -- metrics ------------------------------------------------------------------------------------


def metric_families() -> list[tuple[str, str, str, str, str]]:
    """``(exposed name, type, labels, help, where)`` of every metric the code defines."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    from bridge.consumer.metrics import BridgeMetrics, redis_families
    from bridge.worker import producer
    from bridge.worker.metrics import WorkerMetrics

    found: list[tuple[str, str, str, str, str]] = []

    def held(owner: object, where: str) -> None:
        for value in vars(owner).values():
            metric = getattr(value, "gauge", value)  # a PartitionGauge wraps its Gauge
            if isinstance(metric, MetricWrapperBase):
                found.append(_row(metric._name, metric._type, metric._labelnames,
                                  metric._documentation, where))  # fmt: skip

    held(BridgeMetrics(CollectorRegistry()), "bridge")
    for family in redis_families("group", None):
        found.append(_row(family.name, family.type, getattr(family, "_labelnames", ()),
                          family.documentation, "bridge, read from Redis"))  # fmt: skip
    held(WorkerMetrics(CollectorRegistry()), "worker")
    for counter in producer._counters():
        found.append(_row(counter._name, counter._type, counter._labelnames,
                          counter._documentation, "any process using bridge.produce"))  # fmt: skip
    return found


def _row(name: str, kind: Any, labels: Any, doc: str, where: str) -> tuple[str, str, str, str, str]:
    exposed = f"{name}_total" if kind == "counter" else name
    return exposed, str(kind), ", ".join(f"`{label}`" for label in labels), doc, where


def metrics_reference() -> str:
    """Markdown: one table of every metric."""
    out = ["| metric | type | labels | served by | meaning |", "|---|---|---|---|---|"]
    for name, kind, labels, doc, where in metric_families():
        out.append(f"| `{name}` | {kind} | {labels} | {where} | {_cell(doc)} |")
    return "\n".join(out) + "\n"


# -- reports ------------------------------------------------------------------------------------


def reports() -> list[Path]:
    """The Markdown reports ``make chaos`` and ``make bench`` left in bench/results/."""
    return sorted(RESULTS.glob("*.md"))


def reports_list() -> str:
    """Markdown: links to the reports of this checkout, or why there are none."""
    found = reports()
    if not found:
        return ("*No report in this checkout yet: run `make bench` or `make chaos`, then "
                "`make docs`.*\n")  # fmt: skip
    return "\n".join(f"- [{p.stem}](results/{p.name})" for p in found) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "<!-- reference: configuration -->": configuration_reference,
    "<!-- reference: cli -->": cli_reference,
    "<!-- reference: metrics -->": metrics_reference,
    "<!-- reports: latest -->": reports_list,
}


# -- MkDocs hooks -------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    """Add bench/results/*.md to the site as ``reports/results/<name>.md``."""
    from mkdocs.structure.files import File

    for path in reports():
        text = path.read_text(encoding="utf-8")
        files.append(File.generated(config, f"{RESULTS_URI}/{path.name}", content=text))
    return files


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each marker by its generated Markdown."""
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
