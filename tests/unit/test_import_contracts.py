"""Which module may import which: the import-linter contracts in pyproject.toml hold (issue 17:
pinned on the flat tree, rewritten for the subpackages). ``make lint`` runs the same check;
this test keeps it in the unit suite too."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

CONTRACTS = [  # id -> the rule (removing one to make the check pass fails here)
    ("core-no-clients", "forbidden"),
    ("pure-decisions-no-clients", "forbidden"),
    ("core-imports-no-side", "forbidden"),
    ("backends-import-no-side", "forbidden"),
    ("bridge-process-and-workers-independent", "independence"),
    ("console-pure-parts-no-web", "forbidden"),
    ("library-imports-no-demo", "forbidden"),
]
CLIENTS = ["kafka", "celery", "kombu", "redis"]


def config() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        found: dict[str, object] = tomllib.load(fh)["tool"]["importlinter"]
    return found


def test_the_contracts_are_all_there() -> None:
    contracts = config()["contracts"]
    assert isinstance(contracts, list)
    assert [(c["id"], c["type"]) for c in contracts] == CONTRACTS
    for contract in contracts:
        if contract["id"].endswith("no-clients"):
            assert contract["forbidden_modules"] == CLIENTS, contract["id"]


def test_every_contract_is_kept() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache", "--no-logo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout
