"""Running the GPU check's parts as subprocesses under one overall deadline.

Each part gets a timeout (its budget, cut to what is left before the deadline) and is started
only when at least its floor is left: a part that cannot finish in time is recorded as skipped
instead of being killed half-way and eating the time of the parts after it. A part runs in its
own session (process group), so a timeout kills everything it started, a `train` command's
data loader workers included. Stdlib only: the parent must outlive any import failure.
"""

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class PartOutcome:
    part: str
    status: str  # "ok", "failed (exit N): last line", "timed out after N s", "skipped: why"
    seconds: float = 0.0
    budget_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Running:
    part: str
    process: subprocess.Popen
    log: Path
    started: float
    timeout_s: float
    budget_s: float
    handle: object = field(repr=False, default=None)  # the open log file


class Runner:
    """Starts parts, waits for them, kills the ones past their timeout, and logs it all."""

    def __init__(
        self, log: Path, scratch: Path, env: dict, deadline_s: float, reserve_s: float, cwd: Path
    ):
        self.log = log
        self.scratch = scratch
        self.env = env
        self.started = time.monotonic()
        self.deadline_s = deadline_s
        self.reserve_s = reserve_s  # kept back at the end for writing the results
        self.cwd = cwd
        self.outcomes: list[PartOutcome] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.deadline_s - self.reserve_s - self.elapsed()

    def say(self, line: str) -> None:
        """A line on the console and in the log."""
        stamped = f"[{self.elapsed():6.1f}s] {line}"
        print(stamped, flush=True)
        with self.log.open("a") as log:
            log.write(stamped + "\n")

    def skip(self, part: str, why: str, budget_s: float = 0.0) -> PartOutcome:
        outcome = PartOutcome(part, f"skipped: {why}", budget_s=budget_s)
        self.outcomes.append(outcome)
        self.say(f"{part}: {outcome.status}")
        return outcome

    def start(
        self,
        part: str,
        command: list[str],
        budget_s: float,
        floor_s: float,
        log: Path | None = None,
    ) -> "Running | PartOutcome":
        """The part running, or its outcome when it cannot start in the time left."""
        left = self.left()
        if left < floor_s:
            return self.skip(part, f"{left:.0f} s left before the deadline, needs {floor_s:.0f}")
        timeout = min(budget_s, left)
        log = log or self.scratch / f"{part}.log"
        handle = log.open("w")
        self.say(f"{part}: started, timeout {timeout:.0f} s")
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return Running(part, process, log, time.monotonic(), timeout, budget_s, handle)

    def finish(self, running: "Running | PartOutcome") -> PartOutcome:
        if isinstance(running, PartOutcome):
            return running
        wait = running.timeout_s - (time.monotonic() - running.started)
        try:
            code = running.process.wait(timeout=max(wait, 0.1))
            status = "ok" if code == 0 else f"failed (exit {code}): {_last_line(running.log)}"
        except subprocess.TimeoutExpired:
            _kill_group(running.process)
            status = f"timed out after {running.timeout_s:.0f} s"
        running.handle.close()
        seconds = time.monotonic() - running.started
        outcome = PartOutcome(running.part, status, round(seconds, 1), running.budget_s)
        self.outcomes.append(outcome)
        if running.log.parent == self.scratch:  # the part's own output, kept in the log
            with self.log.open("a") as log:
                log.write(f"----- output of {running.part} -----\n")
                log.write(_tail(running.log.read_text(errors="replace")))
                log.write(f"----- end of {running.part} -----\n")
        self.say(f"{running.part}: {status} ({seconds:.1f} s)")
        return outcome

    def run(self, part: str, command: list[str], budget_s: float, floor_s: float) -> PartOutcome:
        return self.finish(self.start(part, command, budget_s, floor_s))

    def outcome_records(self) -> list[dict]:
        return [asdict(outcome) for outcome in self.outcomes]


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# A lent machine sends back files of at most 16 MiB: ten parts' output must fit in one log.
PART_OUTPUT_LIMIT = 1_000_000  # characters


def _tail(text: str) -> str:
    if len(text) <= PART_OUTPUT_LIMIT:
        return text
    cut = len(text) - PART_OUTPUT_LIMIT
    return f"[... the first {cut} characters cut ...]\n" + text[cut:]


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else "(no output)"
