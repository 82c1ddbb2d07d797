"""The README and docs/ say what the code does: the two commands, links that lead somewhere, every config key with
its default, every module in the layout, every `bluegreen` command and option that the pages name."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from bluegreen_dagster.cli import build_parser
from bluegreen_dagster.config import Settings

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# Pages that other work in progress adds; a link to one of them is checked once it exists.
PAGES_ADDED_ELSEWHERE = {"steps.md", "types.md", "mutation.md", "neo4j-readers.md", "concurrency.md"}
SECTIONS = tuple(Settings.model_fields)


def text(path: Path) -> str:
    return path.read_text()


def section(path: Path, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text(path), re.S | re.M)
    assert match, f"{path.relative_to(REPO)} has no section '## {title}'"
    return match.group(1)


def inline_code(page: str) -> list[str]:
    """The `code spans` of a page, outside fenced blocks."""
    outside = re.sub(r"^```.*?^```", "", page, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", outside)


def code_lines(page: str) -> list[str]:
    """Code spans and the lines of fenced blocks: where commands are written."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", page, flags=re.S | re.M)
    return inline_code(page) + [line for block in blocks for line in block.splitlines()]


# --- the README ---------------------------------------------------------------------------------------------------

def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = text(README).splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    first_block = lines[lines.index("```bash") + 1:lines.index("```")]
    assert lines.index("```bash") <= 3, "the README's first lines are the two commands"
    assert [line.split()[0] for line in first_block] == ["./demo.sh", "./test.sh"]
    demo, test = text(REPO / "demo.sh"), text(REPO / "test.sh")
    assert "bluegreen demo" in demo and "dagster dev" in first_block[0]
    assert "pytest" in test and "neo4j_harness/build.sh" in test


def test_the_readme_draws_the_flow_in_step_order() -> None:
    flow = section(README, "The flow")
    order = ["sensor", "partition", "health_check", "snapshot_database", "gate", "alias_switch", "cleanup"]
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", flow, flags=re.S | re.M):
        positions = [block.find(word) for word in order]
        assert -1 not in positions and positions == sorted(positions), (order, positions)


# --- links --------------------------------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text(path), flags=re.S | re.M),
                                        re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https://, mailto:
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            if dest.parent == DOCS and dest.name in PAGES_ADDED_ELSEWHERE:
                continue
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: links that lead nowhere: {broken}"


# --- configuration: every key, its default ------------------------------------------------------------------------

def _model_of(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _plain_models(model: type[BaseModel] = Settings) -> set[type[BaseModel]]:
    """Models that are a section of their own somewhere (documented there, not again where they are optional)."""
    found = set()
    for field in model.model_fields.values():
        if _model_of(field.annotation):
            found |= {field.annotation} | _plain_models(field.annotation)
    return found


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> dict:
    """Dotted key -> its pydantic field, for every key a user can write (`customers.<name>.x`, `smoke.queries[].x`)."""
    keys = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
        if _model_of(annotation):
            keys |= config_keys(annotation, f"{key}.")
        elif origin is dict and _model_of(args[-1]):
            keys |= config_keys(args[-1], f"{key}.<name>.")
        elif origin is list and _model_of(args[0]):
            keys[key] = field
            keys |= config_keys(args[0], f"{key}[].")
        elif origin in (typing.Union, types.UnionType) and len(args) == 1 and _model_of(args[0]):
            keys[key] = field  # an optional section: a row of its own, and its keys unless documented elsewhere
            if args[0] not in _plain_models():
                keys |= config_keys(args[0], f"{key}.")
        else:
            keys[key] = field
    return keys


def documented_keys() -> dict[str, str]:
    """Key -> its default cell, from the tables of docs/configuration.md."""
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", text(DOCS / "configuration.md"), re.M)
    return {key: default.strip() for key, default in rows if key.split(".")[0].split("[")[0] in SECTIONS}


def expected_default(field) -> str:
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "unset"
    if value in ("", [], {}):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def test_every_config_key_is_documented_with_its_default() -> None:
    code, docs = config_keys(), documented_keys()
    assert not set(code) - set(docs), f"add rows to docs/configuration.md for {sorted(set(code) - set(docs))}"
    assert not set(docs) - set(code), f"docs/configuration.md names keys config.py lacks: {sorted(set(docs) - set(code))}"
    wrong = {key: (docs[key], expected_default(field)) for key, field in code.items()
             if expected_default(field) != docs[key]}
    assert not wrong, f"defaults in docs/configuration.md differ from config.py (doc, code): {wrong}"


def test_config_keys_named_anywhere_exist() -> None:
    """`section.key` in any page's code spans is a real key (`customers.<name>.key` as `customers.key`)."""
    known = {".".join(key.replace("<name>.", "").replace("[]", "").split(".")[:2]) for key in config_keys()}
    unknown = set()
    for page in PAGES:
        for span in inline_code(text(page)):
            if "unknown key" in span:
                continue  # an error message shows a wrong key on purpose
            span = span.replace("<name>.", "")
            for key in re.findall(rf"(?<![\w./-])(?:{'|'.join(SECTIONS)})\.[a-z_]+(?![a-z_])(?![\w.]*\.(?:py|md|yaml)\b)(?!\.[A-Z])", span):
                if key not in known and key != "orchestrator.state_path":  # the one removed key the docs name
                    unknown.add((page.name, key))
    assert known and not unknown, f"keys named in the docs that config.py lacks: {sorted(unknown)}"


# --- the code layout ----------------------------------------------------------------------------------------------

def test_the_layout_lists_every_module_once() -> None:
    layout = section(DOCS / "README.md", "Code layout")
    listed = re.findall(r"^\| `(bluegreen_dagster/[^`]+)` \|", layout, re.M)
    modules = sorted(str(p.relative_to(REPO)) for p in (REPO / "bluegreen_dagster").rglob("*.py")
                     if p.name != "__init__.py")
    twice = sorted({m for m in listed if listed.count(m) > 1})
    assert not twice, f"listed more than once in docs/README.md: {twice}"
    assert not set(modules) - set(listed), f"add to docs/README.md's layout: {sorted(set(modules) - set(listed))}"
    gone = [m for m in listed if not (REPO / m).exists()]
    assert not gone, f"docs/README.md's layout lists files that do not exist: {gone}"


# --- the bluegreen command ----------------------------------------------------------------------------------------

def subcommands() -> dict[str, set[str]]:
    """Sub-command -> its options."""
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {name: {opt for action in p._actions for opt in action.option_strings}
            for name, p in sub.choices.items()}


def test_every_command_and_option_the_docs_name_exists_and_every_command_is_documented() -> None:
    commands = subcommands()
    named, wrong = set(), set()
    for page in PAGES:
        for line in code_lines(text(page)):
            for match in re.finditer(r"(?:^|[\s/`])bluegreen ([a-z][a-z-]*)([^;|&#]*)", line):
                command, rest = match.group(1), match.group(2)
                named.add(command)
                if command not in commands:
                    wrong.add((page.name, f"bluegreen {command}"))
                    continue
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                    if option not in commands[command]:
                        wrong.add((page.name, f"bluegreen {command} {option}"))
    assert not wrong, f"the docs name commands or options `bluegreen` does not have: {sorted(wrong)}"
    assert not set(commands) - named, f"document these commands in docs/: {sorted(set(commands) - named)}"
