"""README.md and README.ja.md name the same commands.

The Japanese README carries the quick start, the deploy steps, the example queries,
changing a model and the troubleshooting section of the English one. The commands of
those sections (every command line of their ``sh`` code blocks, comments stripped and
continuation lines joined) must be the same in both, the four example queries must
appear verbatim, and every ``etl <subcommand>`` either README mentions must exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dbt_project.cli.main import build_parser
from dbt_project.local.demo import EXAMPLE_QUERIES, lineage_hint

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_JA = ROOT / "README.ja.md"

# Level-2 sections of README.md and their counterparts in README.ja.md.
SECTIONS = {
    "Quick start": "クイックスタート",
    "Deploy to AWS": "AWS へのデプロイ",
    "Changing a model": "モデルの変更",
    "Troubleshooting": "トラブルシューティング",
}
# Where README.ja.md shows the example queries as SQL, for psql after `etl demo`.
JA_QUERIES_SECTION = "分析クエリ"
# What a command line starts with (after an optional `VAR=value` or `cd <dir> &&`).
COMMAND_STARTS = (
    "python3 ",
    "python ",
    "pip ",
    ".venv/bin/",
    "npx ",
    "aws ",
    "etl ",
    "psql ",
    "cd ",
    "ss ",
)
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S+\s+")
FENCE = re.compile(r"^```(\S*)\s*$")


def strip_comment(line: str) -> str:
    """The line without a shell comment: a ``#`` at the start or after a blank,
    outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_lines(block: list[str]) -> list[str]:
    """The logical lines of a shell block: comments stripped, ``\\`` continuations
    joined, runs of blanks made one."""
    lines, pending = [], ""
    for raw in block:
        line = strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = " ".join((pending + line).split())
        pending = ""
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(" ".join(pending.split()))
    return lines


def is_command(line: str) -> bool:
    body = ASSIGNMENT.sub("", line)
    if body.startswith("cd ") and "&&" in body:
        body = body.split("&&", 1)[1].strip()
    return body.startswith(COMMAND_STARTS)


def sections(path: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """Each level-2 section's fenced code blocks, as (language, lines)."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    current, language, block = None, None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = FENCE.match(line)
        if block is not None:
            if fence and not fence.group(1):
                found.setdefault(current, []).append((language, block))
                block = None
            else:
                block.append(line)
        elif fence:
            language, block = fence.group(1), []
        elif line.startswith("## "):
            current = line[3:].strip()
            found.setdefault(current, [])
    assert block is None, f"{path.name}: a code block is not closed"
    return found


def commands(path: Path, section: str) -> set[str]:
    blocks = sections(path)
    assert section in blocks, f"{path.name} has no section '## {section}'"
    return {
        line
        for language, block in blocks[section]
        if language == "sh"
        for line in shell_lines(block)
        if is_command(line)
    }


@pytest.mark.parametrize(("english", "japanese"), SECTIONS.items())
def test_both_readmes_name_the_same_commands(english, japanese):
    wanted, found = commands(README, english), commands(README_JA, japanese)
    assert wanted, f"README.md '## {english}' shows no command"
    missing = sorted(wanted - found)
    extra = sorted(found - wanted)
    problems = [f"README.ja.md '## {japanese}' lacks: {command}" for command in missing]
    problems += [
        f"README.ja.md '## {japanese}' has a command README.md '## {english}' lacks: {command}"
        for command in extra
    ]
    assert not problems, "\n".join(problems)


def test_the_quick_start_is_the_two_commands():
    quick = commands(README, "Quick start")
    assert len(quick) == 2, quick
    assert any(command.endswith(".venv/bin/etl demo") for command in quick)
    assert any(command.endswith(".venv/bin/pytest") for command in quick)


def _without_semicolon(query: str) -> str:
    return query.removesuffix(";")


@pytest.mark.parametrize("path", [README, README_JA], ids=lambda p: p.name)
def test_the_example_queries_run_through_the_data_api_verbatim(path):
    """Each query is an ``aws rds-data execute-statement --sql`` of the deploy steps."""
    section = "Deploy to AWS" if path == README else SECTIONS["Deploy to AWS"]
    statements = {
        _without_semicolon(match.group(1))
        for command in commands(path, section)
        if command.startswith("aws rds-data execute-statement ")
        for match in [re.search(r'--sql "([^"]*)"', command)]
        if match
    }
    missing = [q for q in EXAMPLE_QUERIES if _without_semicolon(q) not in statements]
    assert not missing, f"{path.name}: no `aws rds-data execute-statement` runs {missing}"


def test_the_japanese_readme_shows_the_queries_for_psql():
    blocks = sections(README_JA)[JA_QUERIES_SECTION]
    sql_text = "\n".join(line for language, block in blocks if language == "sql" for line in block)
    missing = [query for query in EXAMPLE_QUERIES if query not in sql_text.splitlines()]
    assert not missing, f"README.ja.md '## {JA_QUERIES_SECTION}' lacks the queries {missing}"
    psql = [line for language, block in blocks if language == "sh" for line in shell_lines(block)]
    assert any(line.startswith("psql ") and line.endswith("/analytics") for line in psql), psql


def etl_subcommands(path: Path) -> set[str]:
    """Every ``etl <word>`` in code: inline spans and fenced blocks."""
    text = path.read_text(encoding="utf-8")
    code = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL)
    prose = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.DOTALL)
    code += re.findall(r"`([^`\n]+)`", prose)
    return {
        match.group(1)
        for snippet in code
        for match in re.finditer(r"(?:^|[\s/(])etl ([a-z][a-z-]*)", snippet, flags=re.MULTILINE)
    }


def known_subcommands() -> set[str]:
    parser = build_parser()
    (commands_action,) = (a for a in parser._actions if a.dest == "command")
    return set(commands_action.choices)


@pytest.mark.parametrize("path", [README, README_JA], ids=lambda p: p.name)
def test_every_etl_subcommand_mentioned_exists(path):
    mentioned = etl_subcommands(path)
    assert {"demo", "run"} <= mentioned, mentioned
    unknown = sorted(mentioned - known_subcommands())
    assert not unknown, f"{path.name} mentions `etl` subcommands the CLI lacks: {unknown}"


def test_the_command_extraction_reads_shell_as_written():
    block = [
        "# a comment",
        "aws lambda invoke --function-name <F> \\",
        '  --payload \'{"a": "#1"}\' out.json   # trailing comment',
        'psql "$URL" -c "select 1 # not a comment"',
        "ETL_PG_PORT=54330 .venv/bin/etl demo",
    ]
    lines = shell_lines(block)
    assert lines == [
        'aws lambda invoke --function-name <F> --payload \'{"a": "#1"}\' out.json',
        'psql "$URL" -c "select 1 # not a comment"',
        "ETL_PG_PORT=54330 .venv/bin/etl demo",
    ]
    assert all(is_command(line) for line in lines)
    assert not is_command("export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20")


def test_the_demo_ends_with_the_readmes_way_to_the_lineage():
    hint = lineage_hint("postgresql://postgres@127.0.0.1:54329/analytics")
    command = shlex.split(hint.split("  (")[0])
    assert command[:2] == ["etl", "docs"], hint
    args = build_parser().parse_args(command[1:])
    assert args.analytics_url == "postgresql://postgres@127.0.0.1:54329/analytics"
    for path in (README, README_JA):
        assert "etl docs" in path.read_text(encoding="utf-8"), path.name
    assert "dbt docs generate" not in hint
