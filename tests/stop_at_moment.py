"""Run `mosaic-pretrain train ARGS...` in this process, and hold it at one moment of training for
the test that started it to act there (SIGKILL it, start another run, let it go on).

python tests/stop_at_moment.py MOMENT SIGNAL_FILE -- train arguments
MOMENT is one of
  step:B:EVENT          inside training batch B (1-based), at Composer's EVENT (after_forward,
                        after_backward, after_train_batch: the weights updated, the batch not
                        yet counted)
  write:B:FRACTION      while the checkpoint of batch B is written: FRACTION of its bytes on disk
  after_checkpoint:B    the checkpoint of batch B complete and `latest` linked to it, batch B+1
                        not started
  eval:B:J              inside the evaluation after batch B, after the forward of its batch J
                        (0-based)
At the moment this process writes its pid to SIGNAL_FILE and waits until SIGNAL_FILE.go exists.
A test harness only: it patches Composer's engine and checkpoint writer in this process.
"""

import io
import os
import sys
import time
from pathlib import Path

import composer.utils.checkpoint as composer_checkpoint
import torch
from composer.core import engine

from mosaic_pretrain.cli import main

KIND, *ARGUMENTS = sys.argv[1].split(":")
SIGNAL_FILE = Path(sys.argv[2])
STEP_EVENTS = ("after_forward", "after_backward", "after_train_batch")


def hold() -> None:
    """Say where we are (the pid: the process to kill is this one), then wait to be let go."""
    written = SIGNAL_FILE.with_suffix(".partial")
    written.write_text(f"{os.getpid()}\n")
    written.replace(SIGNAL_FILE)
    go = Path(f"{SIGNAL_FILE}.go")
    while not go.exists():
        time.sleep(0.05)


def _event_name(event) -> str:
    return getattr(event, "value", event)


run_event = engine.Engine.run_event
eval_batches = {"seen": 0}


def run_event_and_hold(self, event):
    result = run_event(self, event)
    name, batch = _event_name(event), int(self.state.timestamp.batch)
    if KIND == "step" and name == ARGUMENTS[1] and batch == int(ARGUMENTS[0]) - 1:
        hold()  # the batch counter moves on after the step, at batch_end
    elif KIND == "after_checkpoint" and name == "batch_start" and batch == int(ARGUMENTS[0]):
        hold()  # the test reads `latest` to see that the checkpoint was complete
    elif KIND == "eval" and batch == int(ARGUMENTS[0]):
        if name == "eval_start":
            eval_batches["seen"] = 0
        elif name == "eval_after_forward":
            if eval_batches["seen"] == int(ARGUMENTS[1]):
                hold()
            eval_batches["seen"] += 1
    return result


write_checkpoint_file = composer_checkpoint._write_checkpoint_file


def write_and_hold(state_dict, filename):
    if f"-ba{ARGUMENTS[0]}-" not in os.path.basename(filename):
        return write_checkpoint_file(state_dict, filename)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    data = buffer.getvalue()
    with open(filename, "wb") as handle:
        handle.write(data[: int(len(data) * float(ARGUMENTS[1]))])
        handle.flush()
        os.fsync(handle.fileno())
        hold()
        handle.write(data[int(len(data) * float(ARGUMENTS[1])) :])


if KIND == "write":
    composer_checkpoint._write_checkpoint_file = write_and_hold
else:
    assert KIND in ("step", "after_checkpoint", "eval"), KIND
    assert KIND != "step" or ARGUMENTS[1] in STEP_EVENTS, ARGUMENTS
    engine.Engine.run_event = run_event_and_hold
sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
