"""Where and when the sweeps of a run's GLUE points run: one at a time, in the order the points
were taken, in one of three modes (`SweepMode`). The queue only runs sweeps and hands back their
outcomes; recording and logging them is the callback's job (on the training thread, where
Composer's loggers may be called)."""

import atexit
import threading
from collections.abc import Callable, Iterator
from enum import Enum

from mosaic_pretrain.glue.point_sweep import PointOutcome
from mosaic_pretrain.glue.points import Point

WAIT_SECONDS = 0.5  # how often a wait for the background sweeps checks for a stop request
STOP_TIMEOUT_S = 60.0  # a stopped sweep stops its jobs (SIGTERM, then SIGKILL after 30 s)

Sweep = Callable[[Point, Callable[[], bool]], PointOutcome]


class SweepMode(str, Enum):
    background = "background"  # a thread of rank 0 runs them while training goes on
    at_point = "at_point"  # run when the point is taken: training waits
    after_training = "after_training"  # run once training has finished


def sweep_mode(gpus: list[int], wait_for_sweeps: bool) -> SweepMode:
    """The recipe's choice: wait at each point, else GPUs set aside, else after training."""
    if wait_for_sweeps:
        return SweepMode.at_point
    return SweepMode.background if gpus else SweepMode.after_training


class SweepQueue:
    """Points waiting for their sweep; `sweep(point, should_stop)` runs one. A sweep stops
    (its jobs stopped, its point back in the queue) once `stop()` is called or `should_stop()`."""

    def __init__(self, mode: SweepMode, sweep: Sweep, should_stop: Callable[[], bool]):
        self.mode = mode
        self._sweep = sweep
        self._should_stop = should_stop  # a stop request from outside (a signal)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._waiting: list[Point] = []
        self._done: list[PointOutcome] = []
        self._running: Point | None = None
        self._worker: threading.Thread | None = None

    def submit(self, point: Point) -> None:
        """Queue `point`; in `at_point` mode its sweep runs now."""
        with self._changed:
            self._waiting.append(point)
            self._changed.notify_all()
        if self.mode is SweepMode.at_point:
            while self._run_next():
                pass
        elif self.mode is SweepMode.background and self._worker is None:
            self._worker = threading.Thread(target=self._work, name="glue-sweeps", daemon=True)
            self._worker.start()
            atexit.register(self.stop)  # an exiting process stops its sweep's jobs first

    def take_done(self) -> list[PointOutcome]:
        """Outcomes finished since the last call, in order."""
        with self._changed:
            done, self._done = self._done, []
        return done

    def pending(self) -> list[Point]:
        """Points whose sweep has not finished: running or waiting."""
        with self._changed:
            return ([self._running] if self._running else []) + list(self._waiting)

    def drain(self) -> Iterator[PointOutcome]:
        """Every outcome still to come, as each arrives, running the waiting sweeps (or, in
        background mode, waiting for them); ends early on a stop request."""
        if self.mode is not SweepMode.background:
            while self._run_next():
                yield from self.take_done()
            yield from self.take_done()
            return
        while True:
            yield from self.take_done()
            with self._changed:
                idle = not self._waiting and self._running is None
            if idle or self._stopping():
                self.stop()
                yield from self.take_done()
                return
            with self._changed:
                self._changed.wait(WAIT_SECONDS)

    def stop(self) -> None:
        """Stop the sweep in progress (its jobs are stopped) and start no other."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(STOP_TIMEOUT_S)

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._should_stop()

    def _run_next(self) -> bool:
        """Sweep the next waiting point; False when none is waiting or a stop was asked for."""
        with self._changed:
            if not self._waiting or self._stopping():
                return False
            point = self._running = self._waiting.pop(0)
        outcome = self._sweep(point, self._stopping)
        with self._changed:
            self._running = None
            if outcome.stopped:
                self._waiting.insert(0, point)
            else:
                self._done.append(outcome)
            self._changed.notify_all()
        return not outcome.stopped

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._stop.is_set():
                    self._changed.wait()
            if self._stopping():
                return
            while self._run_next():
                pass
