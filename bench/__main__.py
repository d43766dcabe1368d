"""``make bench`` = ``python -m bench``: every part of the suite, one after the other, into one
report, ``bench/results/latest.json``, and its table, ``bench/results/latest.md``.

Parts run in this order (``BENCH_PARTS=throughput,memory`` runs only those; the rows of the
others are kept from the last report): ``throughput``, ``replicated``, ``scaling``,
``isolation``, ``retries``, ``memory``, ``fetch``, ``batches``, ``latency``. Each is a module
of ``bench`` with ``run() -> (rows, detail)``. No two parts run at once: they share the
machine's 2 cores with Kafka and Redis.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from bench.harness import RESULTS, machine
from bench.report import Row, markdown, merge

PARTS = (
    "throughput", "replicated", "scaling", "isolation", "retries", "memory", "fetch", "batches",
    "latency",
)  # fmt: skip


def chosen_parts() -> list[str]:
    """The parts ``BENCH_PARTS`` names, in suite order (all by default).

    :raises SystemExit: it names a part that does not exist.
    """
    wanted = [p.strip() for p in os.environ.get("BENCH_PARTS", ",".join(PARTS)).split(",")]
    unknown = sorted(set(wanted) - set(PARTS) - {""})
    if unknown:
        raise SystemExit(f"BENCH_PARTS: unknown part(s) {unknown}; parts are {list(PARTS)}")
    return [p for p in PARTS if p in wanted]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latest.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    report = {key: report[key] for key in ("rows", "detail", "seconds") if key in report}
    started = time.monotonic()
    for part in chosen_parts():
        print(f"bench: {part}…", flush=True)
        began = time.monotonic()
        rows, detail = _run(part)
        report = merge(report, part, rows, detail)
        report["rows"].sort(key=lambda row: PARTS.index(row["part"]))  # stable: in-part order
        report["seconds"] = {**report.get("seconds", {}), part: round(time.monotonic() - began)}
        _write(path, report)
    report["total_seconds"] = round(time.monotonic() - started)
    _write(path, report)
    print(markdown(report))
    return 0 if all(r["holds"] is not False for r in report["rows"]) else 1


def _run(part: str) -> tuple[list[Row], dict[str, Any]]:
    module = importlib.import_module(f"bench.{part}")
    rows, detail = module.run()
    return list(rows), dict(detail)


def _write(path: Any, report: dict[str, Any]) -> None:
    report["machine"] = machine()
    report["command"] = "make bench"
    report["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(report))


if __name__ == "__main__":
    raise SystemExit(main())
