"""The docs hold what they claim: the plugin API reference (docs/plugins.md) names every public
member of every interface, as test_plugins checks the hooks; every `patchbench` command shown in
the README and on the docs pages parses, names specs that exist, and a `validate` shown with its
output prints that output."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pytest

from patchbench import cli, components, crafting, data, evaluation, testing

from .conftest import REPO

INTERFACES = [components.Component, components.Dataset, components.PatchGenerator,
              components.FixedSubsetPatch, components.Architecture, components.Schedule,
              components.Regularizer, components.Metric, components.Optimizer,
              components.Augmentation, components.LabelMixing,
              components.Perturbation, components.Tracker, components.TrackedTrial,
              components.TrackingContext, data.DataBundle,
              evaluation.EvalContext, crafting.CraftContext, crafting.Surrogate]


@pytest.mark.parametrize("cls", INTERFACES, ids=lambda c: c.__name__)
def test_every_interface_member_is_documented(cls):
    doc = (REPO / "docs" / "plugins.md").read_text()
    assert f"`{cls.__name__}`" in doc
    members = [n for n in vars(cls) if not n.startswith("_")]
    assert members
    for name in members:
        assert f"{cls.__name__}.{name}" in doc, f"{cls.__name__}.{name} is not in docs/plugins.md"


def test_errors_helpers_and_the_kit_are_documented():
    doc = (REPO / "docs" / "plugins.md").read_text()
    for name in ("PatchbenchError", "SpecError", "PluginError", "image_dims", "learned_metric"):
        assert name in doc, name
    for name in (n for n in dir(testing) if n.startswith("check_")):
        assert f"`{name}`" in doc, name


# --- Every command the docs show is one the CLI takes ---------------------------------------

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "console", "text"}
SPEC_PATH = re.compile(r"benchmarks/[A-Za-z0-9_.-]+\.yaml")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
SHELL_KEYWORDS = {"do", "then", "else", "time", "exec"}


@dataclass
class Block:
    page: str
    line: int          # 1-based line of the opening fence
    lang: str
    lines: list[str]   # the block's lines, dedented by the fence's indent
    end: int           # 1-based line of the closing fence


@dataclass
class Command:
    page: str
    line: int          # 1-based line of the command in its page
    text: str          # the logical command line, prompt and continuations removed
    argv: list[str]    # the arguments after `patchbench`
    output: list[str] | None  # the output shown with it, if any
    loops: dict[str, list[str]]  # `for VAR in VALUES` of its block: what `$VAR` stands for


def fenced_blocks(path) -> list[Block]:
    blocks, current = [], None
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines, 1):
        stripped = line.lstrip()
        if current is None and stripped.startswith("```"):
            current = Block(path.name, i, stripped[3:].strip(), [], 0)
            indent = len(line) - len(stripped)
        elif current is not None and stripped.startswith("```"):
            current.end = i
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line[indent:] if line[:indent].isspace() else line.lstrip())
    assert current is None, f"{path.name}: unclosed fence at line {current.line}"
    return blocks


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """(line in page, text) with backslash continuations joined."""
    out, pending, start = [], "", 0
    for n, line in enumerate(block.lines, block.line + 1):
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def patchbench_segments(text: str) -> list[list[str]]:
    """Each simple command of a shell line that runs patchbench, as its argument list."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    segments, current = [], []
    for token in tokens + [";"]:
        if token and set(token) <= set(";&|"):
            while current and (ENV_ASSIGNMENT.match(current[0]) or current[0] in SHELL_KEYWORDS):
                current.pop(0)
            if current and current[0] == "patchbench":
                segments.append(current[1:])
            current = []
        else:
            current.append(token)
    return segments


def shown_commands() -> list[Command]:
    commands = []
    for path in PAGES:
        blocks = fenced_blocks(path)
        for b_index, block in enumerate(blocks):
            if block.lang not in SHELL_FENCES:
                continue
            lines = logical_lines(block)
            prompted = any(text.startswith("$ ") for _, text in lines)
            found = []  # (index in lines, line, text, argv)
            loops = {var: values.split() for var, values in re.findall(
                r"\bfor (\w+) in ([^;]+);", "\n".join(block.lines))}
            for k, (n, text) in enumerate(lines):
                if prompted:
                    if not text.startswith("$ "):
                        continue  # output
                    text = text[2:]
                elif block.lang != "bash" and not re.match(
                        r"\s*([A-Za-z_][A-Za-z0-9_]*=\S*\s+)*patchbench\s", text):
                    continue  # a text block of output: only lines that start a command
                for argv in patchbench_segments(text):
                    found.append((k, n, text.strip(), argv))
            for j, (k, n, text, argv) in enumerate(found):
                output = None
                if prompted:
                    stop = next((m for m in range(k + 1, len(lines))
                                 if lines[m][1].startswith("$ ")), len(lines))
                    output = [t for _, t in lines[k + 1:stop]]
                elif len(found) == 1 and b_index + 1 < len(blocks):
                    following = blocks[b_index + 1]
                    between = path.read_text().split("\n")[block.end:following.line - 1]
                    if following.lang == "text" and not any(s.strip() for s in between):
                        output = following.lines
                commands.append(Command(path.name, n, text, argv, output, loops))
    return commands


COMMANDS = shown_commands()


def test_the_docs_show_commands():
    pages = {c.page for c in COMMANDS}
    assert {"README.md", "cli.md", "paper.md", "sweeps.md", "plugins.md"} <= pages, pages
    assert len(COMMANDS) > 40, len(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page}:{c.line}")
def test_every_shown_command_parses(command, capsys):
    where = f"{command.page}, line {command.line}: {command.text}"
    try:
        cli.build_parser().parse_args(command.argv)
    except SystemExit as exc:
        if exc.code not in (0, None):  # --help and --version exit 0
            err = capsys.readouterr().err.strip().splitlines()
            pytest.fail(f"{where}\n  is not a valid command line: {err[-1] if err else exc}")
    for spec in spec_paths(command):
        assert (REPO / spec).is_file(), f"{where}\n  names {spec}, which does not exist"


def spec_paths(command: Command) -> list[str]:
    """The `benchmarks/*.yaml` paths a command names, `$VAR` of a `for` loop expanded."""
    var = re.compile(r"\$\{?(\w+)\}?")
    paths = []
    for arg in command.argv:
        variants = [arg]
        for name in dict.fromkeys(var.findall(arg)):
            assert name in command.loops or "benchmarks/" not in arg, \
                f"{command.page}, line {command.line}: cannot expand ${name} in {arg}"
            variants = [var.sub(lambda m: value if m.group(1) == name else m.group(0), v)
                        for v in variants for value in command.loops.get(name, ["$" + name])]
        for variant in variants:
            paths += SPEC_PATH.findall(variant)
    return sorted(set(paths))


def validate_examples() -> list[Command]:
    """`patchbench validate benchmarks/X.yaml ...` shown with its `benchmarks/X.yaml: ok` line."""
    out = []
    for c in COMMANDS:
        if c.argv[:1] != ["validate"] or len(c.argv) < 2 or not SPEC_PATH.fullmatch(c.argv[1]):
            continue
        ok = re.compile(re.escape(c.argv[1]) + r": ok \(")
        if c.output and any(ok.match(line) for line in c.output):
            out.append(c)
    return out


VALIDATE_EXAMPLES = validate_examples()


def test_the_readme_and_the_cli_page_show_validate_with_its_output():
    shown = {(c.page, c.argv[1]) for c in VALIDATE_EXAMPLES}
    for page in ("README.md", "cli.md"):
        assert (page, "benchmarks/smoke.yaml") in shown, page


@pytest.mark.parametrize("command", VALIDATE_EXAMPLES, ids=lambda c: f"{c.page}:{c.line}")
def test_every_shown_validate_output_is_what_it_prints(command, run_cli, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = run_cli(*command.argv)
    where = f"{command.page}, line {command.line}: patchbench {shlex.join(command.argv)}"
    assert code == 0, f"{where}\n  failed: {err}"
    shown = [line.rstrip() for line in command.output]
    while shown and not shown[-1]:
        shown.pop()
    assert out.rstrip("\n").split("\n") == shown, f"{where}\n  prints:\n{out}"


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub and mkdocs' toc make it."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def test_the_readme_links_resolve():
    """mkdocs --strict checks the site's links; the README is not a page of it."""
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert any(link.startswith("docs/") and link.endswith(".md") for link in links)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = REPO / target if target else REPO / "README.md"
        assert path.is_file(), f"README.md links {link}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"README.md links {link}: no such anchor"
