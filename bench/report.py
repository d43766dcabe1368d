"""One report for every part of ``make bench`` (pure): rows that say whether their target holds.

Each part (throughput, isolation, retries, memory, scaling) returns :class:`Row` values and a
``detail`` dict of its raw measurements. :func:`merge` puts them into ``latest.json``;
:func:`markdown` renders the table of bench/results/latest.md (docs/reports/ includes it).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class Target:
    """What a row's value must be: ``value {op} bound`` (``op`` is ``>=`` or ``<=``)."""

    op: str
    bound: float

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return bool(_COMPARE[self.op](value, self.bound))

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure: ``value`` in ``unit``, and the target it is held to, if any.

    :param part: the part of the suite (``throughput``, ``memory``…).
    :param name: what was measured, as the table shows it.
    :param note: how it was measured, in a few words (shown after the value).
    """

    part: str
    name: str
    value: float
    unit: str
    target: Target | None = None
    note: str = ""

    @property
    def holds(self) -> bool | None:
        """Whether the target holds (``None``: no target, the row is for reference)."""
        return None if self.target is None else self.target.holds(self.value)

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["target"] = None if self.target is None else str(self.target)
        row["holds"] = self.holds
        return row


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, rounded to 3 places (0 when the denominator is 0)."""
    return round(numerator / denominator, 3) if denominator else 0.0


def merge(
    previous: dict[str, Any], part: str, rows: Iterable[Row], detail: dict[str, Any]
) -> dict[str, Any]:
    """``previous`` report with ``part``'s rows and detail replaced (other parts kept)."""
    kept = [r for r in previous.get("rows", []) if r["part"] != part]
    return {
        **previous,
        "rows": kept + [r.to_dict() for r in rows],
        "detail": {**previous.get("detail", {}), part: detail},
    }


def markdown(report: dict[str, Any]) -> str:
    """The table of every row: part, measure, value, target and whether it holds."""
    lines = ["| part | measure | value | target | holds |", "|---|---|---:|---|---|"]
    for row in report.get("rows", []):
        value = f"{_number(row['value'])} {row['unit']}".strip()
        if row.get("note"):
            value += f" ({row['note']})"
        target = row["target"] or ""
        holds = {True: "yes", False: "**no**", None: ""}[row["holds"]]
        lines.append(f"| {row['part']} | {row['name']} | {value} | {target} | {holds} |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
