"""The chaos run's report: ``bench/results/chaos.json`` and its table (pure but for writing).

The full profile (``make chaos``) writes ``chaos.json`` and ``chaos.md``; the reduced one
(plain ``pytest``, CI) writes ``chaos-reduced.json`` and ``chaos-reduced.md``. Runs against the
Sentinel topology write ``chaos-sentinel`` and ``chaos-sentinel-reduced`` (a run with
``CHAOS_MIN_REPLICAS=0``: ``chaos-sentinel-min0``…), with the failover rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.chaos.plan import faults_of

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def markdown(report: dict[str, Any]) -> str:
    """The Reliability table: each fault and how often it was injected, then the totals."""
    counts = report["fault_counts"]
    verdict = report["verdict"]
    dup, dlt_dup = verdict["duplicates"], verdict["dlt_duplicates"]
    topology = report.get("topology", "single")
    rows = [f"| {fault} | {counts.get(fault, 0)} |" for fault in faults_of(topology)]
    totals = [
        ("records produced", verdict["produced"]),
        ("handled", verdict["handled"]),
        ("dead-lettered", verdict["dead_lettered"]),
        ("**lost**", f"**{verdict['lost']}**"),
        *([("lost, by the fault they were produced in (its place in the run)",
            ", ".join(f"{k}: {v}" for k, v in report["lost_by_fault"].items()))]
          if report.get("lost_by_fault") else []),
        ("ordered-key violations", verdict["order_violations"]),
        ("bridges / workers that exited by themselves (restarted)",
         " / ".join(str(sum(c["process"].startswith(p) for c in report["exited_by_themselves"]))
                    for p in ("bridge", "worker"))),
        ("duplicate executions explained: worker SIGKILLed or exited", dup["worker-kill"]),
        ("duplicate executions explained: ack lost in a Redis restart", dup["redis-restart"]),
        *(failover_rows(report) if topology == "sentinel" else []),
        ("duplicate executions unexplained", dup["unexplained"]),
        ("enqueue duplicates (first attempts run again, unexplained)",
         verdict.get("enqueue_duplicates", 0)),
        ("duplicate dead letters explained: worker SIGKILLed or exited", dlt_dup["worker-kill"]),
        ("duplicate dead letters explained: ack lost in a Redis restart",
         dlt_dup["redis-restart"]),
        ("duplicate dead letters explained: write timed out, written again by the bridge",
         dlt_dup["dlt-timeout"]),
        *([("duplicate dead letters explained: a failover", dlt_dup["redis-failover"])]
          if topology == "sentinel" else []),
        ("duplicate dead letters unexplained", dlt_dup["unexplained"]),
    ]  # fmt: skip
    return "\n".join(
        [
            f"Profile `{report['profile']}`, seed {report['seed']}, "
            f"{report['seconds']['total']} s ({report['at']}){heading(report)}.",
            "",
            "| fault | times injected |",
            "|---|---:|",
            *rows,
            *(f"| {name} | {value} |" for name, value in totals),
            "",
        ]
    )


def heading(report: dict[str, Any]) -> str:
    """What the first line adds for the Sentinel topology."""
    if report.get("topology", "single") != "sentinel":
        return ""
    return (f", Redis primary + replica + 3 Sentinels, "
            f"`celery.min_replicas_to_accept = {report['min_replicas_to_accept']}`")  # fmt: skip


def failover_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """The Sentinel topology's rows: how the failovers went, what they could have lost."""
    faults = [f for f in report["faults"] if "new_primary" in f]
    promoted = [f["promoted_after_s"] for f in faults]
    rejoined = [f["rejoined_after_s"] for f in faults]
    back = [f["acted_as_primary_until_s"] - f["promoted_after_s"] for f in faults
            if f.get("acted_as_primary_until_s")]  # fmt: skip
    held = report["not_replicated"]
    return [
        ("failovers (replica promoted, old primary back as a replica)", len(faults)),
        ("replica promoted after (s, min-max)", span(promoted)),
        ("old primary a replica again after (s, min-max)", span(rejoined)),
        ("a partitioned primary back, still a primary for (s after the promotion, max)",
         round(max(back, default=0), 1)),
        ("bytes the old primary wrote and the failover dropped (lower bound, total)",
         sum(f["dropped_bytes"] for f in faults)),
        ("batches run by the primary, too few replicas: not accepted (task messages)",
         f"{held['batches']} ({held['task_messages']})"),
        ("duplicate executions explained: a failover",
         report["verdict"]["duplicates"]["redis-failover"]),
    ]  # fmt: skip


def span(values: list[float]) -> str:
    return f"{min(values)}-{max(values)}" if values else "-"


def stem(report: dict[str, Any]) -> str:
    """The results' file name: ``chaos``, then the topology, ``min0``, the profile."""
    parts = ["chaos"]
    if report.get("topology", "single") == "sentinel":
        parts.append("sentinel")
        if report["min_replicas_to_accept"] != 1:
            parts.append(f"min{report['min_replicas_to_accept']}")
    if report["profile"] != "full":
        parts.append(report["profile"])
    return "-".join(parts)


def write(report: dict[str, Any]) -> Path:
    """Write the report and its table under ``bench/results``; the JSON file's path."""
    stem_ = stem(report)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem_}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem_}.md").write_text(markdown(report))
    return path
