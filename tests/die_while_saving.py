"""Run `mosaic-pretrain train ARGS...` in a process that dies while writing a checkpoint.

python tests/die_while_saving.py BATCH MODE -- train arguments
MODE `kill`: the checkpoint of batch BATCH is half written, then the process SIGKILLs itself.
MODE `disk-full`: half written, then writing fails with ENOSPC, as on a full disk.
A test harness only: it patches Composer's checkpoint writer in this process.
"""

import errno
import io
import os
import signal
import sys

import composer.utils.checkpoint as composer_checkpoint
import torch

from mosaic_pretrain.cli import main

BATCH, MODE = int(sys.argv[1]), sys.argv[2]
write_checkpoint_file = composer_checkpoint._write_checkpoint_file


def dying_writer(state_dict, filename):
    if f"-ba{BATCH}-" not in os.path.basename(filename):
        return write_checkpoint_file(state_dict, filename)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    data = buffer.getvalue()
    with open(filename, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        if MODE == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


composer_checkpoint._write_checkpoint_file = dying_writer
sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
