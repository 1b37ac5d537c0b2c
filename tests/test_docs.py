"""The docs stay true: README.md stays short, every relative link (and its anchor) resolves, every ``robaudit``
command in a shell block names a command and flags that exist, and every module, file and name ARCHITECTURE.md
points to exists."""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import typer

from robaudit.cli import app

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "robaudit"
PAGES = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")
README_LINES = 300


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def outside_fences(text: str) -> list[str]:
    """The lines of a markdown page outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in outside_fences(path.read_text()) if line.startswith("#")}


def test_the_readme_is_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    for line in outside_fences(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            file, _, anchor = target.partition("#")
            where = (page.parent / file).resolve() if file else page
            assert where.exists(), f"{page_id(page)}: {target} does not exist"
            if anchor and where.suffix == ".md":
                assert anchor in anchors(where), f"{page_id(page)}: {target} names no heading of {where.name}"


def shell_commands(text: str) -> list[str]:
    """The commands of the page's ``bash`` blocks, continuation lines joined, comments dropped."""
    commands, block = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            block = [] if block is None and line.strip() in ("```bash", "```sh", "```shell") else None
            continue
        if block is not None:
            line = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
            if commands and commands[-1].endswith("\\"):
                commands[-1] = commands[-1][:-1] + " " + line.strip()
            elif line.strip():
                commands.append(line.strip())
    return commands


def robaudit_invocations(page: Path) -> list[list[str]]:
    """Every ``robaudit COMMAND ...`` (also ``python -m robaudit`` and under torchrun) as its words after robaudit."""
    found = []
    for command in shell_commands(page.read_text()):
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", command):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            for i, word in enumerate(words):
                if word == "robaudit" and (i == 0 or words[i - 1] in ("-m", "time", "env") or "=" in words[i - 1]):
                    found.append(words[i + 1 :])
                    break
    return found


@cache
def cli_options() -> dict[str, set[str]]:
    """Each command's option names (``--flag``), from the Typer app itself."""
    group = typer.main.get_command(app)
    root = {opt for param in group.params for opt in param.opts}
    return {name: {opt for param in cmd.params for opt in param.opts} | root for name, cmd in group.commands.items()}


DOCUMENTED = [(page, words) for page in PAGES for words in robaudit_invocations(page)]


def test_the_pages_show_robaudit_commands():
    assert len(DOCUMENTED) >= 10


@pytest.mark.parametrize(("page", "words"), DOCUMENTED, ids=lambda v: page_id(v) if isinstance(v, Path) else None)
def test_every_documented_command_parses_against_the_cli(page, words):
    options = cli_options()
    words = [w for w in words if w != "--debug"]
    assert words and words[0] in options, f"{page_id(page)}: robaudit {' '.join(words)}: no such command"
    for word in words[1:]:
        flag = word.split("=")[0]
        if flag.startswith("--"):
            assert flag in options[words[0]], f"{page_id(page)}: robaudit {words[0]} has no {flag}"


# ARCHITECTURE.md: `path.py`, `path.py: name[, name]` and dotted `module.name` / `Class.member` references.
PATH_REF = re.compile(r"`((?:[a-z_]+/)*[a-z_]+\.py)(?::\s*([A-Za-z_][\w, ]*))?`")
DOTTED_REF = re.compile(r"`([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`")


def source_file(relative: str) -> Path | None:
    """A file ARCHITECTURE.md names: under src/robaudit, at the repository's top, or unique by its name."""
    for base in (SRC, REPO):
        if (base / relative).is_file():
            return base / relative
    matches = [p for p in SRC.rglob(Path(relative).name) if str(p).endswith(relative)]
    return matches[0] if len(matches) == 1 else None


@cache
def defined(path: Path) -> set[str]:
    """Top-level names of a module, and ``Class.member`` for members of its classes."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{member}" for member in members(node)}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def members(node: ast.ClassDef) -> set[str]:
    """A class's methods, class attributes and the ``self.X`` its methods assign."""
    out = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            out.add(item.name)
            out |= {
                sub.attr
                for sub in ast.walk(item)
                if isinstance(sub, ast.Attribute)
                and isinstance(sub.ctx, ast.Store)
                and isinstance(sub.value, ast.Name)
                and sub.value.id == "self"
            }
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            out.add(item.target.id)
        elif isinstance(item, ast.Assign):
            out |= {t.id for t in item.targets if isinstance(t, ast.Name)}
    return out


@cache
def every_definition() -> set[str]:
    return set().union(*(defined(p) for p in SRC.rglob("*.py")))


def module_path(dotted: str) -> Path | None:
    """``engine.run`` or ``robaudit.engine.run`` -> its file, if it is a module of robaudit."""
    parts = dotted.removeprefix("robaudit.").split(".")
    where = SRC.joinpath(*parts)
    if where.with_suffix(".py").is_file():
        return where.with_suffix(".py")
    return where / "__init__.py" if (where / "__init__.py").is_file() else None


def test_architecture_names_only_what_exists():
    text = (REPO / "ARCHITECTURE.md").read_text()
    missing = []
    for relative, names in PATH_REF.findall(text):
        path = source_file(relative)
        if path is None:
            missing.append(relative)
            continue
        missing += [f"{relative}: {n}" for n in re.split(r",\s*", names.strip()) if n and n not in defined(path)]
    for dotted in DOTTED_REF.findall(text):
        head, _, name = dotted.rpartition(".")
        if name in ("py", "md", "yaml", "json", "jsonl"):
            continue  # a file name: PATH_REF's
        module = module_path(head)
        if module is not None:
            ok = name in defined(module) or module_path(dotted) is not None
        elif head[0].isupper():
            ok = dotted in every_definition()
        else:
            continue  # not robaudit's (torch.Generator, plugins' entry-point groups)
        if not ok:
            missing.append(dotted)
    assert not missing, f"ARCHITECTURE.md names what does not exist: {missing}"
