"""Reading Composer checkpoints without running code from them.

A checkpoint is a pickle, and unpickling may call any function the file names (`os.system`
included). Every read of ours therefore uses `torch.load(weights_only=True)`, which builds only
tensors, containers and plain values, plus the few other classes a checkpoint written by
`mosaic-pretrain train` holds (`CHECKPOINT_GLOBALS`, found by listing the globals of real
checkpoints). A checkpoint naming anything else is refused with the names, never loaded with the
restriction lifted.

Composer itself reads checkpoints with `weights_only=False` when a run resumes. It calls the
function named by `CHECKPOINT_VALIDATION_FUNCTION` on the file right before, so while a Trainer
is built (`composer_loads_checked`) that is `validate_for_composer`: each file Composer is about
to unpickle (a local `latest` link, a `load_path`, one downloaded from a bucket) is first read
the safe way.
"""

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import numpy
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals
from torch.torch_version import TorchVersion

from mosaic_pretrain.errors import CheckpointError, first_line

CHECKPOINT_GLOBALS = (
    datetime.timedelta,  # wall-clock times in Composer's Timestamp and checkpoint saver state
    numpy.ndarray,  # numpy's RNG state: ('MT19937', uint32 key array, ...)
    numpy.dtype,
    type(numpy.dtype(numpy.uint32)),
    numpy.zeros(0).__reduce__()[0],  # how numpy rebuilds a pickled array (`_reconstruct`)
    TorchVersion,  # metadata.torch_version
)
COMPOSER_MODEL_PREFIX = "model."  # the ComposerModel keeps the transformers model as `.model`
VALIDATION_VARIABLE = "CHECKPOINT_VALIDATION_FUNCTION"  # read by composer.utils.checkpoint
VALIDATOR = f"{__name__}.validate_for_composer"


def load_checkpoint(checkpoint: Path, mmap: bool = True) -> dict:
    """A checkpoint's state, read with `weights_only=True` and our allow-list (tensors
    memory-mapped unless `mmap` is false); a one-line CheckpointError when it is missing,
    unreadable, or names a class or function outside the list."""
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist; fix the path")
    try:
        with safe_globals(list(CHECKPOINT_GLOBALS)):
            return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # refused or corrupt: say which, never retry unrestricted
        forbidden = _forbidden_globals(checkpoint)
        shown = _shown(checkpoint)
        if forbidden:
            raise CheckpointError(
                f"checkpoint {shown} is refused: its pickle refers to "
                f"{', '.join(forbidden)}, which no checkpoint of mosaic-pretrain train holds, and "
                "unpickling it could run arbitrary code; use a checkpoint written by "
                "mosaic-pretrain train (or re-save the weights with code you trust)"
            ) from None
        raise CheckpointError(
            f"checkpoint {shown} is corrupt or not a Composer checkpoint "
            f"({type(error).__name__}: {first_line(error)[:120]}); use another checkpoint of "
            "the run"
        ) from None


def _shown(checkpoint: Path) -> str:
    """The path, and the file it links to (`latest-rank0.pt`, Composer's temporary link)."""
    if checkpoint.is_symlink():
        return f"{checkpoint} (-> {checkpoint.resolve()})"
    return str(checkpoint)


def _forbidden_globals(checkpoint: Path) -> list[str]:
    """The globals the file's pickle names outside torch's and our allow-lists, read by
    disassembling it (nothing is run); empty when it cannot be read at all."""
    try:
        with safe_globals(list(CHECKPOINT_GLOBALS)):
            return sorted(get_unsafe_globals_in_checkpoint(checkpoint))
    except Exception:  # not a zip archive, no data.pkl, a pickle cut short: corrupt
        return []


_chained_validator: str | None = None  # a validation function the user had set before ours


def validate_for_composer(checkpoint: str | Path, specs=None) -> bool:
    """Composer's checkpoint validation hook: refuse (raise) before Composer unpickles a file
    that the safe loader will not read, then run any validator the user had set."""
    load_checkpoint(Path(checkpoint))
    if _chained_validator is None:
        return True
    module, _, name = _chained_validator.rpartition(".")
    return getattr(import_module(module), name)(checkpoint, specs)


@contextmanager
def composer_loads_checked() -> Iterator[None]:
    """While this is active, every checkpoint Composer loads is first read by the safe loader."""
    global _chained_validator
    previous = os.environ.get(VALIDATION_VARIABLE)
    _chained_validator = previous if previous != VALIDATOR else None
    os.environ[VALIDATION_VARIABLE] = VALIDATOR
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(VALIDATION_VARIABLE, None)
        else:
            os.environ[VALIDATION_VARIABLE] = previous
        _chained_validator = None


def composer_weights(state: dict, checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint's state, named as in the transformers model."""
    try:
        weights = state["state"]["model"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {checkpoint} is corrupt or not a Composer checkpoint "
            f"(no {error} in it); use another checkpoint of the run"
        ) from None
    return {name.removeprefix(COMPOSER_MODEL_PREFIX): tensor for name, tensor in weights.items()}
