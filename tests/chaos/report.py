"""The chaos run's report: ``bench/results/chaos.json`` and its table (pure but for writing).

The full profile (``make chaos``) writes ``chaos.json`` and ``chaos.md``; the reduced one
(plain ``pytest``, CI) writes ``chaos-reduced.json`` and ``chaos-reduced.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.chaos.plan import FAULTS

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def markdown(report: dict[str, Any]) -> str:
    """The Reliability table: each fault and how often it was injected, then the totals."""
    counts = report["fault_counts"]
    verdict = report["verdict"]
    dup, dlt_dup = verdict["duplicates"], verdict["dlt_duplicates"]
    rows = [f"| {fault} | {counts.get(fault, 0)} |" for fault in FAULTS]
    totals = [
        ("records produced", verdict["produced"]),
        ("handled", verdict["handled"]),
        ("dead-lettered", verdict["dead_lettered"]),
        ("**lost**", f"**{verdict['lost']}**"),
        ("ordered-key violations", verdict["order_violations"]),
        ("bridges / workers that exited by themselves (restarted)",
         " / ".join(str(sum(c["process"].startswith(p) for c in report["exited_by_themselves"]))
                    for p in ("bridge", "worker"))),
        ("duplicate executions explained: worker SIGKILLed or exited", dup["worker-kill"]),
        ("duplicate executions explained: ack lost in a Redis restart", dup["redis-restart"]),
        ("duplicate executions unexplained", dup["unexplained"]),
        ("duplicate dead letters explained: worker SIGKILLed or exited", dlt_dup["worker-kill"]),
        ("duplicate dead letters explained: ack lost in a Redis restart",
         dlt_dup["redis-restart"]),
        ("duplicate dead letters explained: write timed out, written again by the bridge",
         dlt_dup["dlt-timeout"]),
        ("duplicate dead letters unexplained", dlt_dup["unexplained"]),
    ]  # fmt: skip
    return "\n".join(
        [
            f"Profile `{report['profile']}`, seed {report['seed']}, "
            f"{report['seconds']['total']} s ({report['at']}).",
            "",
            "| fault | times injected |",
            "|---|---:|",
            *rows,
            *(f"| {name} | {value} |" for name, value in totals),
            "",
        ]
    )


def write(report: dict[str, Any]) -> Path:
    """Write the report and its table under ``bench/results``; the JSON file's path."""
    stem = "chaos" if report["profile"] == "full" else f"chaos-{report['profile']}"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    return path
