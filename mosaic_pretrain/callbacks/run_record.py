"""The resolved recipe and the code version, stored in every checkpoint.

A checkpoint then says how it was made, and a resume can compare the recipe it continues with
(`mosaic_pretrain.train.resume`). Logged keys: none; the record travels in the checkpoint's
`state.callbacks.RunRecord`.
"""

import subprocess
from pathlib import Path

from composer.core import Callback

import mosaic_pretrain


def code_version() -> str:
    """The package version, plus the git commit (and `-dirty`) when run from a checkout."""
    version = mosaic_pretrain.__version__
    source = Path(mosaic_pretrain.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode != 0 or not commit.stdout.strip():
        return version
    return f"{version}+git.{commit.stdout.strip()}"


class RunRecord(Callback):
    def __init__(self, recipe: dict, version: str | None = None):
        self.recipe = recipe
        self.version = version or code_version()
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        return {"recipe": self.recipe, "code_version": self.version}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state
