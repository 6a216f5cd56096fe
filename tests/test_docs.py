"""The README and docs/ stay true to the code: every `ctxscale` command they show parses, the spec
reference is the one the models generate, and every relative link leads to a file that exists."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from ctxscale.cli import build_parser
from ctxscale.spec_reference import COMMAND, reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
GENERATED = {ROOT / "docs" / "specs.md"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# `ctxscale COMMAND ...` or `python -m ctxscale.cli COMMAND ...`, not `ctxscale/spec/` or `ctxscale: error`
INVOCATION = re.compile(r"(?:^|[\s(;&|])(?:python3? -m ctxscale\.cli|ctxscale)\s+(?=[a-z-])(.*)")
SHELL_END = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def command_lines(text: str) -> list[str]:
    """What follows `ctxscale` in every command the page shows: in fenced blocks and inline code."""
    snippets = [line for block in FENCE.findall(text) for line in block.splitlines()]
    snippets += INLINE_CODE.findall(FENCE.sub("", text))
    found = []
    for snippet in snippets:
        match = INVOCATION.search(snippet.split("  #")[0])
        if match:
            found.append(match.group(1).strip())
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_words(line: str, parser: argparse.ArgumentParser) -> list[str]:
    """The subcommands and --flags of one command line that the CLI's parser does not have."""
    try:
        words = shlex.split(line)
    except ValueError:  # an unbalanced quote in a shortened example: read it word by word
        words = line.split()
    problems = []
    for word in words:
        if word in SHELL_END:
            break
        commands = _subcommands(parser)
        if commands and not word.startswith("-"):
            if word not in commands:
                problems.append(f"subcommand {word!r}")
                break
            parser = commands[word]
        elif word.startswith("--") and word.split("=")[0] not in parser._option_string_actions:
            problems.append(f"{parser.prog}: flag {word.split('=')[0]!r}")
    return problems


def _every_command() -> list[tuple[str, str]]:
    return [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in command_lines(page.read_text())]


def test_the_checker_finds_a_removed_flag_and_subcommand():
    parser = build_parser()
    assert unknown_words("sweep sweeps/synthetic.yaml --results r --quiet training.lr=1", parser) == []
    assert unknown_words("data synthetic --rows 10 --out d", parser) == []
    assert unknown_words("sweep sweeps/synthetic.yaml --no-such-flag", parser) == ["ctxscale sweep: flag '--no-such-flag'"]
    assert unknown_words("data synthetik --rows 10", parser) == ["subcommand 'synthetik'"]
    assert command_lines("```bash\nctxscale analyze results --sweep s  # a comment --x\n```\n`ctxscale/spec/`") \
        == ["analyze results --sweep s"]


def test_every_command_the_docs_show_exists():
    parser = build_parser()
    commands = _every_command()
    assert len(commands) >= 20, f"only {len(commands)} ctxscale command lines found: is the parsing broken?"
    wrong = [f"{page}: ctxscale {line}  -> {', '.join(problems)}"
             for page, line in commands if (problems := unknown_words(line, parser))]
    assert not wrong, "commands in the docs that the CLI no longer has:\n" + "\n".join(wrong)


def test_the_readme_starts_with_the_two_set_up_commands():
    first_block = FENCE.search(README.read_text()).group(1).splitlines()
    assert len(first_block) == 2, first_block
    assert re.match(r"^pip install .*pytest", first_block[1]), "CI runs the README's `pip install ... pytest` line"
    assert "ctxscale sweep sweeps/synthetic.yaml" in first_block[0]


def test_the_spec_reference_is_current():
    written = (ROOT / "docs" / "specs.md").read_text()
    assert written == reference(), f"docs/specs.md is out of date with ctxscale/spec/: run `{COMMAND}`"


def _anchors(page: Path) -> set[str]:
    """The fragments GitHub gives the headings of a page (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_").strip().replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_in_the_repository(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in path.parents and path != ROOT:
            broken.append(f"{target} (outside the repository)")
        elif not path.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and path.suffix == ".md" and fragment not in _anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


# folders outside a user's clone that a page must not cite, spelled in pieces so that this file
# does not itself cite them
OUTSIDE = ("/".join(("..", "shared")), "/" + "work" + "/", "." + "devcarry")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_pages_name_no_path_outside_the_repository(page):
    text = page.read_text()
    assert not [path for path in OUTSIDE if path in text], f"{page.relative_to(ROOT)} cites a folder outside the repository"


def test_the_readme_is_a_guide_and_tables_stay_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines: move detail under docs/ (the guide is ~250)"
    long_cells = [f"{page.relative_to(ROOT)}: {cell[:60]}..." for page in PAGES if page not in GENERATED
                  for row in page.read_text().splitlines() if row.startswith("|")
                  for cell in row.strip("|").split(" | ") if len(cell) > 200]
    assert not long_cells, "table cells over 200 characters:\n" + "\n".join(long_cells)
