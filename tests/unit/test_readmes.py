"""README.md and README.ja.md name the same commands, options and sections.

Every level-2 section of the English README has its Japanese counterpart, in the same
order (the Japanese one adds the example queries for psql), and the troubleshooting
sections have as many cases. The commands of each section (every command line of their
``sh`` code blocks, comments stripped and continuation lines joined) must be the same
in both, the four example queries must appear verbatim, every ``etl <subcommand>``
either README mentions must exist, both name the same ``etl`` options and CDK context
keys, and each README's command table gives every subcommand with all its options.
The Japanese README avoids the words that mislead its readers: 営業日 (a working day:
the pipeline runs every calendar day), 晩 (a calque of "night" for a run), 窓 (the
run window is 対象期間) and 契約 (a dbt contract is a コントラクト).
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

# Level-2 sections of README.md and their counterparts in README.ja.md, in order.
SECTIONS = {
    "Quick start": "クイックスタート",
    "Architecture": "アーキテクチャ",
    "How a night works": "日次実行の仕組み",
    "The local development loop": "ローカルでの開発",
    "The `etl` command": "`etl` コマンド",
    "Changing a model": "モデルの変更",
    "Tests": "テスト",
    "Deploy to AWS": "AWS へのデプロイ",
    "Operations": "運用と監視",
    "Troubleshooting": "トラブルシューティング",
    "Performance": "性能",
}
# Where README.ja.md shows the example queries as SQL, for psql after `etl demo`.
JA_QUERIES_SECTION = "分析クエリ"
# Words README.ja.md must not use, and what it says instead.
MISLEADING_JAPANESE = {
    "営業日": "前日 / 対象日 (Asia/Tokyo の日付): every calendar day runs",
    "晩": "日次実行 / 対象日 / 実行",
    "窓": "対象期間",
    "契約": "コントラクト",
}
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


def headings(path: Path, level: int) -> list[str]:
    marker = "#" * level + " "
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [line[len(marker) :].strip() for line in text.splitlines() if line.startswith(marker)]


def test_both_readmes_have_the_same_sections_in_the_same_order():
    assert headings(README, 2) == list(SECTIONS), "a README.md section SECTIONS does not map"
    japanese = [h for h in headings(README_JA, 2) if h != JA_QUERIES_SECTION]
    assert japanese == list(SECTIONS.values())
    assert JA_QUERIES_SECTION in headings(README_JA, 2)


def _subsections(path: Path, section: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("### ")]


def test_both_troubleshooting_sections_have_the_same_cases():
    english = _subsections(README, "Troubleshooting")
    japanese = _subsections(README_JA, SECTIONS["Troubleshooting"])
    assert len(english) == len(japanese), (english, japanese)


@pytest.mark.parametrize(("english", "japanese"), SECTIONS.items())
def test_both_readmes_name_the_same_commands(english, japanese):
    wanted, found = commands(README, english), commands(README_JA, japanese)
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


@pytest.mark.parametrize("word", MISLEADING_JAPANESE)
def test_the_japanese_readme_avoids_misleading_words(word):
    lines = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(README_JA.read_text(encoding="utf-8").splitlines(), 1)
        if word in line
    ]
    assert not lines, f"README.ja.md uses {word}; say {MISLEADING_JAPANESE[word]}:\n" + "\n".join(
        lines
    )


def etl_options() -> dict[str, set[str]]:
    """Each subcommand's long options, by their first name (not aliases)."""
    parser = build_parser()
    (commands_action,) = (a for a in parser._actions if a.dest == "command")
    return {
        name: {
            action.option_strings[0]
            for action in sub._actions
            if action.option_strings and action.option_strings[0].startswith("--")
        }
        - {"--help"}
        for name, sub in commands_action.choices.items()
    }


def _code_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    prose = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.DOTALL)
    code = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL)
    return "\n".join(code + re.findall(r"`([^`\n]+)`", prose))


def mentioned_etl_options(path: Path) -> set[str]:
    known = set().union(*etl_options().values())
    return set(re.findall(r"--[a-z][a-z-]*", _code_text(path))) & known


def test_both_readmes_name_the_same_etl_options_and_context_keys():
    assert mentioned_etl_options(README) == mentioned_etl_options(README_JA)
    context = {p: set(re.findall(r"-c ([a-z_]+)=", _code_text(p))) for p in (README, README_JA)}
    assert context[README] == context[README_JA]


def command_table(path: Path) -> dict[str, str]:
    """The command table's rows, by each ``etl <subcommand>`` the first cell names."""
    rows: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `etl "):
            continue
        first_cell = line.split(" | ", 1)[0]
        for name in re.findall(r"`etl ([a-z][a-z-]*)", first_cell):
            rows[name] = rows.get(name, "") + line
    return rows


@pytest.mark.parametrize("path", [README, README_JA], ids=lambda p: p.name)
def test_the_command_table_gives_every_subcommand_with_its_options(path):
    rows, options = command_table(path), etl_options()
    assert set(rows) == set(options), f"{path.name}: table rows {sorted(rows)}"
    problems = [
        f"etl {name}: {option} is not in its row"
        for name, row in rows.items()
        for option in sorted(options[name])
        if option not in row
    ]
    problems += [
        f"etl {name}'s row names {option}, which it lacks"
        for name, row in rows.items()
        for span in re.findall(r"`([^`]+)`", row)
        if not span.startswith("dbt ")  # dbt's own options, in a dbt command line
        for option in re.findall(r"--[a-z][a-z-]*", span)
        if not any(option in options[other] for other in re.findall(r"`etl ([a-z][a-z-]*)", row))
    ]
    assert not problems, "\n".join(problems)


def test_ci_runs_the_readme_s_test_command_word_for_word():
    """CI proves the README's command on a fresh clone only if it is that command."""
    (test_command,) = [c for c in commands(README, "Quick start") if c.endswith("bin/pytest")]
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci_lines
