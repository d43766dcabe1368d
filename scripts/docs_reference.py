"""The documentation's reference pages, generated from the code so that they cannot drift.

An MkDocs hook (``hooks:`` in mkdocs.yml): a page holding one of the markers below gets the
marker replaced by the generated Markdown when the site is built.

- ``<!-- reference: configuration -->``: every key of the settings model
  (:class:`bridge.settings.BridgeSettings`) with its type, default, limits, environment variable
  and description (the field's ``description``: ``Field(description=...)`` in bridge/sections/);
- ``<!-- reference: cli -->``: every command and flag of the argument parser
  (:func:`bridge.cli._parser`), with its ``help``;
- ``<!-- reference: metrics -->``: every Prometheus metric the bridge, its workers and
  ``bridge.produce`` define, from the metric objects themselves;
- ``<!-- reports: latest -->``: links to the reports ``make chaos`` and ``make bench`` wrote
  (``bench/results/*.md``), which the build adds to the site under ``reports/results/``.

Nothing is described here: a key without a description or a flag without help is a failure of
``tests/unit/test_docs_reference.py`` (:func:`undescribed`, :func:`unhelped`), which also checks
that the pages name every key, command, flag and metric.
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

TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}


# -- configuration ------------------------------------------------------------------------------


def sections(settings: type[BaseModel] | None = None) -> Iterator[tuple[str, type[BaseModel]]]:
    """``(section name, its model)`` for every section of ``settings``, in the model's order.

    :param settings: the whole model (default: :class:`bridge.settings.BridgeSettings`).
    """
    if settings is None:
        from bridge.settings import BridgeSettings

        settings = BridgeSettings
    for name, field in settings.model_fields.items():
        annotation = field.annotation
        candidates = (annotation, *typing.get_args(annotation))
        [model] = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
        yield name, model


def undescribed(settings: type[BaseModel] | None = None) -> list[str]:
    """Every ``section.key`` of ``settings`` (default: the bridge's) without a description."""
    return [
        f"{section}.{key}"
        for section, model in sections(settings)
        for key, field in model.model_fields.items()
        if not (field.description or "").strip()
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
            text = field.description or ""
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


def subcommands(
    parser: argparse.ArgumentParser | None = None,
) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """``name -> (help, parser)`` for every command of ``parser`` (default: ``python -m
    bridge``'s, :func:`bridge.cli._parser`)."""
    if parser is None:
        from bridge.cli import _parser

        parser = _parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


def unhelped(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Every command, ``command --flag`` and ``command POSITIONAL`` of ``parser`` (default:
    ``python -m bridge``'s) that says nothing about itself: no ``help=``."""
    found = []
    for command, (summary, sub) in subcommands(parser).items():
        if not summary.strip():
            found.append(command)
        for action in sub._actions:
            if not (action.help or "").strip():
                found.append(f"{command} {(action.option_strings or [action.dest])[-1]}")
    return found


def flag_row(action: argparse.Action) -> str:
    """One flag or positional argument as a table row: its names and value, and what it does."""
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs != 0:
        value = action.metavar or action.dest.upper()
        if action.choices is not None:
            value = "{" + ",".join(map(str, action.choices)) + "}"
        names = f"{names} `{value}`".lstrip()
    text = _cell(action.help or "")
    notes = _notes(action, text)
    if notes:
        text += f" ({', '.join(notes)})"
    return f"| {names} | {text} |"


def _notes(action: argparse.Action, text: str) -> list[str]:
    """What a flag's help does not say itself: required, repeatable, its default."""
    notes = []
    if action.required and action.option_strings:  # a positional argument is always required
        notes.append("required")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        notes.append("repeatable")
    # A help that names its default says it better (-1 is "the broker's", not -1).
    defaulted = action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0
    if defaulted and "default" not in text:
        notes.append(f"default `{action.default}`")
    return notes


def cli_reference() -> str:
    """Markdown: each command's usage and a table of its flags."""
    out = []
    for name, (summary, parser) in subcommands().items():
        parser.prog = f"kafka-celery-bridge {name}"
        out += [f"## `{name}`", "", summary[:1].upper() + summary[1:] + ".", ""]
        out += ["```text", parser.format_usage().strip(), "```", ""]
        out += ["| argument | what it does |", "|---|---|"]
        out += [flag_row(a) for a in parser._actions if not a.option_strings]
        out += [flag_row(a) for a in parser._actions if a.option_strings]
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
