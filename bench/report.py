"""The one table the suite prints: every measurement, its reference ratio and its target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """A goal for a row's ratio, its peak memory, or its seconds."""

    text: str
    check: Callable[[Row], bool]


def at_least(factor: float) -> Target:
    return Target(f"≥ {factor:g}x", lambda row: row.ratio is not None and row.ratio >= factor)


def time_at_most(factor: float) -> Target:
    return Target(f"time ≤ {factor:g}x", lambda row: row.ratio is not None and row.ratio <= factor)


def seconds_at_most(limit: float) -> Target:
    return Target(f"≤ {limit:g} s", lambda row: row.seconds is not None and row.seconds <= limit)


def memory_below(limit_mb: float, growth: float | None = None) -> Target:
    text = f"< {limit_mb:g} MB" + (f", ≤ {growth:g}x smaller" if growth else "")

    def check(row: Row) -> bool:
        if row.peak_mb is None or row.peak_mb >= limit_mb:
            return False
        return growth is None or (row.ratio is not None and row.ratio <= growth)

    return Target(text, check)


@dataclass
class Row:
    case: str
    rows: int | None
    seconds: float | None
    peak_mb: float | None = None
    ratio: float | None = None
    target: Target | None = None
    note: str = ""
    # Printed under the table with --details: where the time of this row went.
    details: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        if not self.rows or not self.seconds:
            return None
        return self.rows / self.seconds

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.check(self)

    @property
    def result(self) -> str:
        return {None: "", True: "pass", False: "MISS"}[self.passed]


COLUMNS = ("case", "rows", "seconds", "rows/s", "peak MB", "ratio", "target", "result", "note")


def _cells(row: Row) -> list[str]:
    return [
        row.case,
        f"{row.rows:,}" if row.rows else "",
        f"{row.seconds:.2f}" if row.seconds is not None else "",
        f"{row.rate:,.0f}" if row.rate else "",
        f"{row.peak_mb:.0f}" if row.peak_mb is not None else "",
        f"{row.ratio:.2f}x" if row.ratio is not None else "",
        row.target.text if row.target else "",
        row.result,
        row.note,
    ]


def table(rows: list[Row]) -> str:
    """A Markdown table: aligned for the terminal, pasteable into the README."""
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {1, 2, 3, 4, 5}

    def render(line: list[str]) -> str:
        padded = [
            text.rjust(widths[i]) if i in numeric else text.ljust(widths[i])
            for i, text in enumerate(line)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([render(cells[0]), rule, *(render(line) for line in cells[1:])])
