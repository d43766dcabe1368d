"""The ``status`` document as tables for people (rich). Pure: renders what it is given."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

# Wide enough for any table: rich takes no more width than a table's content needs.
UNBOUNDED_COLUMNS = 10_000


def console_for(stream: IO[str], environ: Mapping[str, str] = os.environ) -> Console:
    """A console writing to ``stream``: a terminal's width; written to a file or a pipe,
    ``COLUMNS`` if set, else as wide as the tables need (rich would cut them to 80 columns)."""
    if stream.isatty():
        return Console(file=stream)
    columns = environ.get("COLUMNS", "")
    return Console(file=stream, width=int(columns) if columns.isdigit() else UNBOUNDED_COLUMNS)


def render(doc: Mapping[str, Any], console: Console) -> None:
    """Print the status document ``doc`` (see :func:`bridge.ops.status.status_doc`)."""
    console.print(Group(*views(doc)))


def views(doc: Mapping[str, Any]) -> list[RenderableType]:
    """The renderables of ``doc``, top to bottom."""
    parts: list[RenderableType] = [_title(doc)]
    parts += [Text(f"warning: {w}", style="bold yellow") for w in doc.get("warnings", ())]
    parts.append(_routes(doc["routes"]))
    parts += _unroutable(doc["routes"])
    parts.append(_partitions(doc["routes"]))
    if doc["retries"] is not None:
        parts.append(_retries(doc["retries"]))
    if doc["dead_letters"] is not None:
        parts += _dead_letters(doc["dead_letters"])
    if doc["ordered"] is not None and any(r["ordered"] for r in doc["routes"]):
        parts += _ordered(doc["ordered"])
    parts += [Text(f"error: {e}", style="bold red") for e in doc["errors"]]
    return parts


def _title(doc: Mapping[str, Any]) -> Text:
    bridges = doc["bridges"]
    running = f"{len(bridges)} bridge(s) running" if bridges else "no bridge running"
    text = Text(f"consumer group {doc['group_id']} at {doc['at']}: {running}", style="bold")
    if doc.get("redis_primary"):  # Sentinels: where they say the primary is now
        text.append(f"\n  Redis primary (Sentinel): {doc['redis_primary']}", style="")
    replicas = doc.get("redis_replicas") or {}
    if replicas.get("connected") or replicas.get("required"):
        text.append(f"\n  Redis replicas: {replicas['connected']} connected, "
                    f"{replicas['required']} required to accept", style="")  # fmt: skip
    for b in bridges:
        down = " (Celery broker down)" if b["broker_down"] else ""
        text.append(f"\n  {b['member']}: {len(b['partitions'])} partitions{down}", style="")
    return text


def _routes(routes: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="routes", title_justify="left")
    numbers = {"queued", "consumers", "lag", "DLT records"}
    for name in ("topic", "task", "queue", "queued", "consumers", "lag", "DLT", "DLT records",
                 "breaker"):  # fmt: skip
        table.add_column(name, justify="right" if name in numbers else "left")
    for r in routes:
        kind = " (ordered)" if r["ordered"] else ""
        table.add_row(r["topic"] + kind, r["task"], r["queue"], _n(r["queue_depth"]),
                      _consumers(r.get("consumers")), _n(r["lag"]), r["dlt_topic"],
                      _n(r["dlt_records"]), _breaker(r["breaker"]))  # fmt: skip
    return table


def _consumers(consumers: int | None) -> Text:
    """Worker channels on the bridge's transport consuming the route's queue."""
    if consumers is None:
        return Text("-", style="dim")
    return Text(str(consumers), style="bold yellow" if consumers == 0 else "")


def _breaker(breaker: Mapping[str, Any] | None) -> Text:
    if breaker is None:
        return Text("-", style="dim")
    seen = f"{breaker['dead_lettered']}/{breaker['handled'] + breaker['dead_lettered']}"
    if breaker["state"] == "closed":
        return Text(f"closed ({seen} dead-lettered)", style="green")
    since = f" since {breaker['since']}" if breaker["since"] else ""
    return Text(f"{breaker['state']}{since} ({seen} dead-lettered; resume with: resume)",
                style="bold red" if breaker["state"] == "open" else "yellow")  # fmt: skip


def _unroutable(routes: Iterable[Mapping[str, Any]]) -> list[Text]:
    """A line per route whose task no live worker runs, or whose records were unroutable."""
    lines = []
    for r in routes:
        problem = (r.get("workers") or {}).get("problem")
        if problem:
            lines.append(Text(f"route {r['topic']}: {problem}", style="bold red"))
        count = r.get("unroutable") or {}
        last = count.get("last")
        if count.get("records") and last:
            lines.append(Text(
                f"route {r['topic']}: {count['records']} record(s) dead-lettered as unroutable, "
                f"the last at {last['at']} (task {last['task']}, worker {last['worker']}): "
                f"{last['error']}", style="red"))  # fmt: skip
    return lines


def _partitions(routes: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="partitions", title_justify="left")
    for name in ("topic", "partition", "committed", "end", "lag", "uncommitted", "owner", "state"):
        table.add_column(name, justify="left" if name in {"topic", "owner", "state"} else "right")
    for r in routes:
        for p in r["partitions"]:
            state = _state(p)
            table.add_row(r["topic"], str(p["partition"]), _n(p["committed"]), _n(p["end"]),
                          _n(p["lag"]), _n(p["uncommitted"]), p["owner"] or "-", state)  # fmt: skip
    return table


def _state(p: Mapping[str, Any]) -> Text:
    if p["owner"] is None:
        return Text("no bridge", style="dim")
    if p["paused"] is not None:
        return Text(f"paused: {p['paused']}", style="yellow")
    return Text("consuming", style="green")


def _retries(retries: Mapping[str, Any]) -> Text:
    text = Text(f"delayed retries waiting in Redis: {retries['waiting']}")
    if retries["next_due_at"] is not None:
        text.append(f"; next due {retries['next_due_at']} (in {retries['next_due_in_s']} s), "
                    f"last due {retries['last_due_at']}")  # fmt: skip
    if retries["overdue"]:
        text.append(f"; {retries['overdue']} overdue (is a bridge running?)", style="yellow")
    return text


def _dead_letters(dead: Mapping[str, Any]) -> list[RenderableType]:
    text = Text(f"dead letters not in Kafka: {dead['pending']} pending")
    if dead["pending_next_attempt_at"] is not None:
        text.append(f" (next attempt {dead['pending_next_attempt_at']})")
    text.append(f", {dead['parked']} parked", style="red" if dead["parked"] else "")
    if not dead["parked_sample"]:
        return [text]
    table = Table(title="parked dead letters (replay with: replay --parked)", title_justify="left")
    for name in ("task id", "task", "reason", "error", "dead-lettered at"):
        table.add_column(name)
    for d in dead["parked_sample"]:
        table.add_row(d["task_id"], d["task"], d["reason"], d["error"], d["dead_lettered_at"])
    return [text, table]


def _ordered(ordered: Mapping[str, Any]) -> list[RenderableType]:
    waiting = sum(ordered["records_waiting"].values())
    keys_out = ordered["keys_out"]
    parts: list[RenderableType] = [
        Text(f"ordered records in key queues: {waiting}; keys with a head out: {keys_out}")
    ]
    if ordered["keys_waiting"]:
        parts.append(_keys("ordered keys retrying their head", ordered["keys_waiting"], "failing"))
    if ordered["keys_parked"]:
        parts.append(_keys("parked ordered keys (release with: release)", ordered["keys_parked"],
                           "parked"))  # fmt: skip
    return parts


def _keys(title: str, states: Iterable[Mapping[str, Any]], kind: str) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["topic", "key", "waiting", "oldest record", f"{kind} for", "head"]
    for name in [*columns, "why"] if kind == "parked" else columns:
        table.add_column(name, justify="right" if name in {"waiting"} else "left")
    for k in states:
        since = k.get("failing_for_s") if kind == "failing" else k.get("parked_for_s")
        row = [k["topic"], _key(k), str(k["depth"]), f"{k['oldest_age_s']} s", _n(since, " s"),
               k["head_task_id"] or "-"]  # fmt: skip
        if kind == "parked":
            row.append((k.get("parked") or {}).get("reason", ""))
        table.add_row(*row)
    return table


def _key(state: Mapping[str, Any]) -> str:
    if state.get("key") is not None:
        return str(state["key"])
    if state.get("key_b64") is not None:
        return f"b64:{state['key_b64']}"
    return f"(no key, partition {state.get('partition')})"


def _n(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"
