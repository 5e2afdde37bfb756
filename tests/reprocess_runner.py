"""The reprocess state machine's steps, run in this process by the real Lambda handlers.

moto runs the synthesized definition (tests/infra/test_reprocess.py), but its Lambda
stub only echoes; this runner sends the same payloads to the real handlers and reads
their answers with the same paths as the definition's ResultSelectors: Plan, then for
each chunk ExtractChunk and LoadChunk, then Report. Like a Standard execution it keeps
its place: after a failure ``redrive()`` resumes at the step that failed, with the same
input, never at an earlier chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.lambda_helpers import Context, load_handler


@dataclass
class Execution:
    execution_input: dict
    # The loop's state, as the definition keeps it.
    state: dict = field(default_factory=dict)
    step: str = "Plan"
    redrives: int = 0
    # (step, payload, answer) of every invocation; a failed one's answer is None.
    calls: list[tuple[str, dict, dict | None]] = field(default_factory=list)
    failed: str | None = None
    output: dict | None = None
    # Test hooks: called with the chunk's index once its extract returned; the load
    # function's remaining time (its load's time limit is that less two minutes).
    after_extract: Callable[[int], None] = lambda index: None
    load_remaining_ms: int = 600_000

    def __post_init__(self):
        self.id = f"arn:aws:states:ap-northeast-1:123456789012:execution:reprocess:{uuid.uuid4()}"
        self.started = datetime.now(UTC).isoformat()
        self.extract, self.load = load_handler("extract"), load_handler("load")

    def _invoke(self, handler, name: str, payload: dict, remaining_ms: int = 600_000) -> dict:
        self.calls.append((self.step, payload, None))
        answer = handler(payload, Context(name, remaining_ms))
        self.calls[-1] = (self.step, payload, answer)
        return answer

    def _plan(self) -> None:
        result = self._invoke(self.extract, "extract", {"plan": self.execution_input})
        self.state = {"plan": result, "next": 0, "rows": 0}
        self.step = "MoreChunks"

    def _more(self) -> None:
        done = self.state["next"] >= self.state["plan"]["count"]
        self.step = "Report" if done else "ExtractChunk"

    def _extract_chunk(self) -> None:
        chunk = self.state["plan"]["chunks"][self.state["next"]]
        result = self._invoke(self.extract, "extract", {"chunk": chunk})
        run = result["runs"][0]
        self.state["extracted"] = {
            "manifest_key": run["manifest_key"],
            "rows": run["rows_extracted"],
        }
        self.step = "LoadChunk"
        self.after_extract(self.state["next"])

    def _load_chunk(self) -> None:
        payload = {"manifest_key": self.state["extracted"]["manifest_key"]}
        result = self._invoke(self.load, "load", payload, self.load_remaining_ms)
        self.state["loaded"] = {"loads": result["loads"]}
        # NextChunk
        self.state = {
            "plan": self.state["plan"],
            "next": self.state["next"] + 1,
            "rows": self.state["rows"] + self.state["extracted"]["rows"],
        }
        self.step = "MoreChunks"

    def _report(self) -> None:
        execution = {"Id": self.id, "StartTime": self.started, "RedriveCount": self.redrives}
        payload = {
            "report": {
                "plan": self.state["plan"],
                "rows": self.state["rows"],
                "execution": execution,
            }
        }
        self.output = {"report": self._invoke(self.load, "load", payload)}
        self.step = "done"

    def run(self) -> dict:
        """Run until done; a failure propagates and the execution stays at its step."""
        steps = {
            "Plan": self._plan,
            "MoreChunks": self._more,
            "ExtractChunk": self._extract_chunk,
            "LoadChunk": self._load_chunk,
            "Report": self._report,
        }
        self.failed = None
        while self.step != "done":
            try:
                steps[self.step]()
            except Exception:
                self.failed = self.step
                raise
        return self.output

    def redrive(self) -> dict:
        assert self.failed is not None, "only a failed execution can be redriven"
        self.redrives += 1
        return self.run()
