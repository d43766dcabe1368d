"""What the package declares is what is tested: the Python versions of the classifiers and
``requires-python`` are those ``make test`` runs (the suite on the first, the unit tests on the
Makefile's ``OTHER_PYTHONS``)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = re.compile(r"Programming Language :: Python :: (3\.\d+)$")


def project() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        found: dict[str, object] = tomllib.load(fh)["project"]
    return found


def pythons_declared() -> list[str]:
    classifiers = project()["classifiers"]
    assert isinstance(classifiers, list)
    return [m.group(1) for c in classifiers if (m := CLASSIFIER.match(c))]


def pythons_tested() -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    found = re.search(r"^OTHER_PYTHONS \?= (.+)$", makefile, re.MULTILINE)
    assert found, "the Makefile names the other Pythons the unit tests run on"
    return ["3.11", *found.group(1).split()]


def test_the_classifiers_name_the_tested_pythons() -> None:
    assert pythons_declared() == pythons_tested()


def test_requires_python_starts_at_the_oldest_tested() -> None:
    assert project()["requires-python"] == f">={pythons_tested()[0]}"


def test_this_python_is_one_of_them() -> None:
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in pythons_tested()
