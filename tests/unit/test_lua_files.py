"""The Lua scripts are files of the package: each loads through importlib.resources, documents
itself in a header that is not sent, and the wheel ships it (pyproject's package data)."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from bridge.backends.redis import scripts

REPO = Path(__file__).resolve().parents[2]
LUA = resources.files("bridge.backends.redis").joinpath("lua")
NAMES = sorted(entry.name.removesuffix(".lua") for entry in LUA.iterdir()
               if entry.name.endswith(".lua"))  # fmt: skip


def test_every_script_of_the_product_is_a_file() -> None:
    shared = {"fifo_parts", "fifo_publish", "fifo_append"}
    run = {"enqueue", "ordered_start", "ordered_done", "ordered_batch_done", "ordered_retrying",
           "ordered_park", "ordered_release", "ordered_republish", "retries_move_due",
           "retries_gather",
           "dead_letter_unpark", "fetch_move_first", "fetch_restore"}  # fmt: skip
    assert set(NAMES) == shared | run
    assert {part for uses in scripts.USES.values() for part in uses} == shared


@pytest.mark.parametrize("name", NAMES)
def test_a_script_loads_without_its_header(name: str) -> None:
    text = LUA.joinpath(f"{name}.lua").read_text("utf-8")
    header = text[: len(text) - len(scripts.source(name))]
    assert header.startswith(f"-- {name}.lua: ")
    for word in ("KEYS", "ARGV", "Returns"):
        assert word in header, f"{name}.lua's header says nothing of {word}"
    body = scripts.source(name)
    assert body.startswith("\n")
    assert not body.lstrip("\n").startswith("--")
    assert "redis.call" in body


@pytest.mark.parametrize("name", sorted(scripts.USES))
def test_a_script_is_sent_after_the_functions_it_uses(name: str) -> None:
    sent = scripts.script(name)
    parts = [scripts.source(part) for part in (*scripts.USES[name], name)]
    assert sent == "".join(parts)
    assert sent.count("local function parts(el)") == 1


def test_a_script_sent_in_full_with_every_call_carries_no_comment() -> None:
    assert "--" not in scripts.script("fetch_move_first")


def test_an_unknown_script_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        scripts.source("no_such_script")


def test_the_wheel_finds_every_subpackage_and_ships_every_script() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = setuptools["packages"]
    assert isinstance(found, dict), "a package list leaves new subpackages out of the wheel"
    include = found["find"]["include"]
    packages = [".".join(p.parent.relative_to(REPO).parts) for p in REPO.glob("bridge/**/*.py")
                if p.name == "__init__.py"]  # fmt: skip
    assert "bridge.backends.redis" in packages
    for package in packages:
        assert any(fnmatch.fnmatch(package, pattern) for pattern in include), package
    folder = REPO / "bridge" / "backends" / "redis"
    shipped = {path.name for pattern in setuptools["package-data"]["bridge.backends.redis"]
               for path in folder.glob(pattern)}  # as setuptools globs them  # fmt: skip
    assert shipped >= {f"{name}.lua" for name in NAMES}
