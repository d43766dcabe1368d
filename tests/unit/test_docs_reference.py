"""The reference pages of the documentation are generated from the code
(``scripts/docs_reference.py``, an MkDocs hook): they name every configuration key, every
command and flag and every metric the public surface pins, and every key and flag says what it
does (the field's description, the flag's help: the generator holds none), so a new key without a
description or a new flag without help fails here."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, Field

from tests.unit.test_public_surface import (
    BRIDGE_METRICS,
    COMMANDS,
    CONFIG_KEYS,
    POSITIONAL,
    REDIS_METRICS,
    WORKER_METRICS,
)

REPO = Path(__file__).resolve().parents[2]
PRODUCE_METRICS = ("bridge_produce_records", "bridge_produce_retries", "bridge_produce_errors")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_reference", REPO / "scripts" / "docs_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = load_generator()


def test_every_configuration_key_is_described_in_the_settings_model() -> None:
    """The descriptions live on the fields (``Field(description=...)``): a new key without one
    fails here, before an undocumented key reaches the reference."""
    assert ref.undescribed() == []
    described = {
        f"{section}.{key}"
        for section, model in ref.sections()
        for key, field in model.model_fields.items()
        if field.description
    }
    assert described == {f"{s}.{k}" for s, keys in CONFIG_KEYS.items() for k in keys}


def test_a_key_without_a_description_is_found() -> None:
    class Section(BaseModel):
        said: int = Field(default=1, description="Says what it is.")
        silent: int = 2
        blank: int = Field(default=3, description=" ")

    class Whole(BaseModel):
        part: Section = Section()
        parts: list[Section] = []

    assert ref.undescribed(Whole) == [
        "part.silent", "part.blank", "parts.silent", "parts.blank"
    ]  # fmt: skip


def test_every_command_and_flag_has_help_in_the_parser() -> None:
    """The help lives in the argument parser (``help=``): a new flag without it fails here."""
    assert ref.unhelped() == []


def test_a_command_or_flag_without_help_is_found() -> None:
    parser = argparse.ArgumentParser(prog="p")
    commands = parser.add_subparsers(dest="command")
    told = commands.add_parser("told", help="does a thing")
    told.add_argument("--said", help="what it is")
    told.add_argument("--silent")
    told.add_argument("where")
    commands.add_parser("mute")
    assert ref.unhelped(parser) == ["told --silent", "told where", "mute"]


@pytest.mark.parametrize("section", list(CONFIG_KEYS))
def test_the_configuration_page_names_every_key(section: str) -> None:
    page = ref.configuration_reference()
    table = "[[routes]]" if section == "routes" else f"[{section}]"
    part = page.split(f"## `{table}`\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.split(" | ")[0].strip("| `") for line in part.splitlines() if line.startswith("| `")
    ]
    assert rows == list(CONFIG_KEYS[section])


def test_the_cli_page_names_every_command_and_flag() -> None:
    page = ref.cli_reference()
    commands = [line[4:-1] for line in page.splitlines() if line.startswith("## `")]
    assert commands == list(COMMANDS)
    for command, flags in COMMANDS.items():
        part = page.split(f"## `{command}`\n", 1)[1].split("\n## ", 1)[0]
        for flag in flags:
            for name in flag.split("/"):
                assert f"`{name}`" in part, f"{command} {name}"
        for positional in POSITIONAL.get(command, []):
            choices = positional.split("choices=")[1].replace("|", ",")
            assert f"| `{{{choices}}}` |" in part, f"{command} {positional}"


def test_a_flag_row_adds_only_what_its_help_leaves_unsaid() -> None:
    parser = argparse.ArgumentParser()
    said = parser.add_argument("--said", action="append", help="x (repeatable)")
    told = parser.add_argument("--told", type=int, default=-1, help="y (default: the broker's)")
    bare = parser.add_argument("--bare", action="append", required=True, help="z")
    counted = parser.add_argument("--counted", type=int, default=3, help="n")
    assert ref.flag_row(said) == "| `--said` `SAID` | x (repeatable) |"
    assert ref.flag_row(told) == "| `--told` `TOLD` | y (default: the broker's) |"
    assert ref.flag_row(bare) == "| `--bare` `BARE` | z (required, repeatable) |"
    assert ref.flag_row(counted) == "| `--counted` `COUNTED` | n (default `3`) |"


def test_the_metrics_page_names_every_metric() -> None:
    page = ref.metrics_reference()
    listed = [line.split("`")[1] for line in page.splitlines() if line.startswith("| `")]
    families = {**BRIDGE_METRICS, **REDIS_METRICS, **WORKER_METRICS}
    expected = [f"{n}_total" if kind == "counter" else n for n, (kind, _) in families.items()]
    expected += [f"{n}_total" for n in PRODUCE_METRICS]
    assert sorted(listed) == sorted(expected)
    for line in page.splitlines()[2:]:
        assert line.rstrip(" |").split(" | ")[-1], f"no meaning: {line}"


def test_reports_are_listed_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ref, "RESULTS", tmp_path)
    assert "No report in this checkout yet" in ref.reports_list()
    (tmp_path / "chaos.md").write_text("| fault | times |\n")
    assert ref.reports_list() == "- [chaos](results/chaos.md)\n"


def test_the_hook_replaces_every_marker() -> None:
    page = "\n".join(ref.GENERATORS)
    done = ref.on_page_markdown(page)
    assert "<!--" not in done
    assert "`bootstrap_servers`" in done
    assert "## `replay`" in done


def test_the_readme_is_a_front_page_whose_links_resolve() -> None:
    """The README is not part of the site (``mkdocs build --strict`` does not see it): its
    relative links are checked here, and its size (issue 18: about 250 lines at most)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
