"""The user's guide (README.md) and the reference pages (docs/*.md): short enough to read, every
relative link resolves, every `stvsr ...` command in them parses with today's options, and no path
outside the repository or word about how the project is developed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from stvsr_cli.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:\S*/)?stvsr\s+(.*)$")
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_docs_exist():
    assert DOCS, "docs/ has no pages"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 170, f"README.md has {len(lines)} lines; keep it under 170"


# --- links ---------------------------------------------------------------------------------------

def links(text: str) -> list[str]:
    """Link targets outside code blocks and code spans."""
    out = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out += LINK.findall(INLINE.sub("", line))
    return out


def test_link_finder():
    text = "[a](x.md) ![b](img/y.png#z) [c](https://e.org) `[d](not-a-link)`\n```\n[e](nor-this)\n```\n"
    assert links(text) == ["x.md", "img/y.png#z", "https://e.org"]


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"(?i)(https?:|mailto:)", target):
            continue
        path = target.split("#", 1)[0]
        if not path:  # an anchor in the same page
            continue
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{rel(page)}: links to missing files: {broken}"


# --- commands ------------------------------------------------------------------------------------

def command_lines(text: str) -> list[tuple[int, str, bool]]:
    """(line number, arguments after `stvsr`, whether it is a whole command) for every command line
    in a code block (continuation backslashes joined) and every inline code span that starts with
    `stvsr ` (fragments: a missing argument is allowed there, nothing else; `[...]` of a usage
    synopsis dropped)."""
    out = []
    in_fence = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            if pending is not None:
                start, joined = pending
                line = joined.rstrip() + " " + line.strip()
                number = start
                pending = None
            if line.rstrip().endswith("\\"):
                pending = (number, line.rstrip()[:-1])
                continue
            match = COMMAND.match(line)
            if match:
                out.append((number, match.group(1), True))
        else:
            for span in INLINE.findall(line):
                if span.startswith("stvsr "):
                    # a usage synopsis: `stvsr upscale IN OUT [options]`
                    synopsis = re.sub(r"\s*\[[^\]]*\]", "", span[len("stvsr "):])
                    out.append((number, synopsis, False))
    return out


def strip_comment(args: str) -> str:
    """Drop a trailing ` # comment` (outside quotes)."""
    lexer = shlex.shlex(args, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = []
    try:
        for word in lexer:
            if word.startswith("#"):
                break
            words.append(word)
    except ValueError:
        return args
    return shlex.join(words)


def check_command(args: str, whole: bool = True) -> str | None:
    """Parse `stvsr ARGS` with click down to the subcommand, running nothing. None when it parses,
    else why not. `...` stands for elided arguments: with it, or in a fragment (`whole` false), a
    missing argument or option is allowed; unknown options, bad values and bad choices never are."""
    try:
        words = shlex.split(strip_comment(args))
    except ValueError as exc:
        return f"cannot split: {exc}"
    elided = "..." in words
    words = [w for w in words if w != "..."]
    tolerate_missing = elided or not whole
    cmd: click.Command = main
    name = "stvsr"
    parent = None
    try:
        while True:
            ctx = cmd.make_context(name, list(words), parent=parent, resilient_parsing=False)
            if not isinstance(cmd, click.Group):
                return None
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                return None if tolerate_missing else f"'{name}' needs a subcommand"
            name, sub, words = cmd.resolve_command(ctx, rest)
            if sub is None:
                return f"no such command: {rest[0]}"
            cmd, parent = sub, ctx
    except click.exceptions.Exit:  # --help, --version
        return None
    except click.exceptions.MissingParameter as exc:
        return None if tolerate_missing else f"{type(exc).__name__}: {exc.format_message()}"
    except click.exceptions.NoArgsIsHelpError:
        return None if tolerate_missing else f"'{name}' needs arguments"
    except click.exceptions.ClickException as exc:
        return f"{type(exc).__name__}: {exc.format_message()}"


@pytest.mark.parametrize(
    "args",
    [
        "upscale a.mp4 b.mp4 --no-such-option",
        "upscale a.mp4 b.mp4 --ivtc maybe",
        "upscale a.mp4 b.mp4 --scale 0",
        "upscale a.mp4 b.mp4 --denoise loud",
        "upscale a.mp4",
        "upscale a.mp4 b.mp4 c.mp4",
        "batch in/ out/ --jobs many",
        "weights fetch zsm",
        "no-such-command",
        "weights",
    ],
)
def test_checker_catches_bad_commands(args):
    assert check_command(args) is not None


@pytest.mark.parametrize(
    "args",
    [
        "upscale a.mp4 b.mp4 --model classic --start 10:00 --duration 30   # a comment",
        "--debug upscale IN.mp4 OUT.mp4 --fps 60000/1001",
        "weights download zsm",
        "train ... --out runs/x --resume",
        "models --json",
    ],
)
def test_checker_passes_good_commands(args):
    assert check_command(args) is None


def test_fragments_may_leave_out_arguments_only():
    assert check_command("upscale --model zsm --weights NAME.safetensors", whole=False) is None
    assert check_command("upscale --no-such-option", whole=False) is not None


def test_command_finder():
    text = (
        "Run `stvsr models --json`, `stvsr upscale IN OUT [options]`.\n"
        "```sh\n"
        "stvsr upscale a.mp4 b.mp4 \\\n"
        "    --model classic\n"
        "$ stvsr models\n"
        ".venv/bin/stvsr batch in/ out/   # folders\n"
        "echo stvsr upscale\n"
        "```\n"
    )
    assert command_lines(text) == [
        (1, "models --json", False),
        (1, "upscale IN OUT", False),
        (3, "upscale a.mp4 b.mp4 --model classic", True),
        (5, "models", True),
        (6, "batch in/ out/   # folders", True),
    ]


def test_a_wrong_line_in_a_page_fails():
    text = "```sh\nstvsr upscale a.mp4 b.mp4 --no-such-option\n```\n"
    [(number, args, whole)] = command_lines(text)
    problem = check_command(args, whole)
    assert problem is not None and "no-such-option" in problem


def all_commands():
    for page in PAGES:
        for number, args, whole in command_lines(page.read_text(encoding="utf-8")):
            yield pytest.param(args, whole, id=f"{rel(page)}:{number}")


@pytest.mark.parametrize("args,whole", list(all_commands()))
def test_documented_commands_parse(args, whole):
    problem = check_command(args, whole)
    assert problem is None, f"`stvsr {args}`: {problem}"


def test_pages_have_commands():
    assert len(list(all_commands())) >= 10


# --- words ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_outside_paths_or_process_words(page):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{rel(page)} names a path outside the repository"
    found = re.findall(r"(?i)\bissues?\s+#?\d", text)
    assert not found, f"{rel(page)} names issue numbers: {found}"
