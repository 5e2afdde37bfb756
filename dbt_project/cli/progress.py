"""`etl backfill`'s progress: one bar over the plan's chunks, and a line per chunk.

The bar counts days; its time left is the cost model's estimate of the chunks still to
run, scaled by how the chunks so far compared with their own estimates (the model was
measured on another machine than the one running it).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from dbt_project.cli.lines import chunk_line
from dbt_project.plan import Chunk, Plan


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class ChunkProgress:
    """A transient bar over the plan's days: days done, rows, estimated time left."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.rows = 0
        self.estimated_done = 0.0
        self.started = time.perf_counter()
        console = Console()
        self.progress = Progress(
            TextColumn("backfill"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} days"),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("about {task.fields[left]} left"),
            transient=True,
            # Output to a file or a pipe (CI logs) gets the chunk lines only.
            disable=not console.is_terminal,
            console=console,
        )
        self.task = self.progress.add_task(
            "backfill", total=plan.days, rows=0, left=_minutes(plan.estimate_seconds)
        )

    def __enter__(self) -> ChunkProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def time_left(self) -> float:
        """The remaining chunks' estimate, scaled by the actual-to-estimated ratio so far."""
        elapsed = time.perf_counter() - self.started
        remaining = self.plan.estimate_seconds - self.estimated_done
        scale = elapsed / self.estimated_done if self.estimated_done > 0 else 1.0
        return max(remaining * scale, 0.0)

    def done(self, chunk: Chunk, night) -> None:
        self.rows += night.extract.rows_extracted
        self.estimated_done += chunk.estimate_seconds
        self.progress.console.print(chunk_line(chunk, night), soft_wrap=True, highlight=False)
        self.progress.update(
            self.task, advance=chunk.days, rows=self.rows, left=_minutes(self.time_left())
        )
