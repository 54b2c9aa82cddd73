"""Checkpoints are read without running code from them. Ours load under the allow-list; a forged
one, whose pickle would run a payload, is refused by `check`, `export`, `train` (autoresume, and
Composer's own load) and a GLUE starting point, and the payload never runs."""

import gc
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from composer.utils.checkpoint import safe_torch_load
from torch.serialization import safe_globals

from mosaic_pretrain.cli import main
from mosaic_pretrain.config import load_config
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.errors import CheckpointError
from mosaic_pretrain.train.safe_load import (
    CHECKPOINT_GLOBALS,
    VALIDATION_VARIABLE,
    composer_loads_checked,
    load_checkpoint,
)
from tests.glue_helpers import STANDINS

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
CHECKPOINT = "ep0-ba2-rank0.pt"


def quick(data: Path, save_folder: Path, *overrides: str) -> list[str]:
    return [
        f"data_local={data}",
        "train_loader.dataset.convert_builtin_corpus=false",
        "eval_loader=null",
        "model.model_config.num_hidden_layers=1",
        "global_train_batch_size=8",
        "device_train_microbatch_size=8",
        "max_duration=2ba",
        "save_interval=2ba",
        "log_to_console=false",
        "autoresume=false",  # a new run each time (the smoke recipe continues its own)
        "export_folder=null",
        f"save_folder={save_folder}",
        *overrides,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("safe") / "corpus"
    options = ConvertOptions(max_documents=40, compression="none")
    convert(options, folder, progress=False, log=lambda line: None)
    return folder


@pytest.fixture(scope="module")
def run_folder(data, tmp_path_factory) -> Path:
    """The save folder of a real 2-batch run (checkpoint, resolved recipe)."""
    from mosaic_pretrain.commands.train import train

    folder = tmp_path_factory.mktemp("run") / "ckpt"
    train(load_config(SMOKE, quick(data, folder))).close()
    gc.collect()
    return folder


class ShellCommand:
    """Unpickled, runs `touch MARKER` (a pickle may call any function it names)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Planted:
    """Our own class: unpickling it imports this module and calls `__setstate__`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()


PAYLOADS = {"os.system": (ShellCommand, "posix.system"), "custom class": (Planted, __name__)}


@pytest.fixture(params=list(PAYLOADS))
def forged(request, run_folder, tmp_path):
    """A copy of the run's folder whose newest checkpoint carries a payload that would create
    `marker`; returns (folder, forged checkpoint, marker, the global the refusal names)."""
    payload, named = PAYLOADS[request.param]
    folder = tmp_path / "ckpt"
    shutil.copytree(run_folder, folder, symlinks=True)
    marker = tmp_path / "payload-ran"
    state = load_checkpoint(folder / CHECKPOINT, mmap=False)
    state["state"]["callbacks"]["RunRecord"]["note"] = payload(marker)
    checkpoint = folder / "ep0-ba3-rank0.pt"  # newer: autoresume picks it
    torch.save(state, checkpoint)
    return folder, checkpoint, marker, named


def refusal(checkpoint: Path, named: str) -> str:
    return f"checkpoint {checkpoint} is refused: its pickle refers to {named}"


def test_our_checkpoints_load_safely_and_need_every_allowed_global(run_folder):
    checkpoint = run_folder / CHECKPOINT
    state = load_checkpoint(checkpoint)
    assert state["state"]["callbacks"]["RunRecord"]["recipe"]["run_name"] == "smoke"
    assert all(torch.isfinite(t).all() for t in state["state"]["model"].values())
    for left_out in CHECKPOINT_GLOBALS:  # the list is minimal: without any one, the load fails
        fewer = [obj for obj in CHECKPOINT_GLOBALS if obj is not left_out]
        with safe_globals(fewer), pytest.raises(pickle.UnpicklingError, match=left_out.__name__):
            torch.load(checkpoint, weights_only=True, mmap=True)


def test_the_forged_payload_runs_when_unpickled_without_restriction(forged):
    """The control: the forged files really are attacks."""
    _, checkpoint, marker, _ = forged
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


def test_check_refuses_a_forged_checkpoint(data, forged, tmp_path, capsys):
    _, checkpoint, marker, named = forged
    overrides = quick(data, tmp_path / "new", f"load_path={checkpoint}", "max_duration=4ba")
    assert main(["check", str(SMOKE), *overrides]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if "problem:" in line]
    assert len(problems) == 1 and refusal(checkpoint, named) in problems[0]
    assert "could run arbitrary code" in problems[0]
    assert not marker.exists()


def test_export_refuses_a_forged_checkpoint(forged, tmp_path, capsys):
    _, checkpoint, marker, named = forged
    assert main(["export", str(checkpoint), str(tmp_path / "hf")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"mosaic-pretrain export: error: {refusal(checkpoint, named)}")
    assert not marker.exists() and not (tmp_path / "hf").exists()


def test_train_with_autoresume_refuses_a_forged_latest_checkpoint(data, forged, capsys):
    folder, checkpoint, marker, named = forged
    overrides = quick(data, folder, "autoresume=true", "max_duration=4ba")
    assert main(["train", str(SMOKE), *overrides]) == 2
    assert os.readlink(folder / "latest-rank0.pt") == checkpoint.name  # it was the one to load
    last = capsys.readouterr().err.strip().splitlines()[-1]
    shown = Path(f"{folder / 'latest-rank0.pt'} (-> {checkpoint})")
    assert last.startswith(f"mosaic-pretrain train: error: {refusal(shown, named)}")
    assert not marker.exists() and not (folder / "ep0-ba4-rank0.pt").exists()


def test_composers_own_load_is_checked_first(data, forged, monkeypatch):
    """Composer unpickles without restriction; when our checks do not see the file first (a
    remote load_path), the validation hook still refuses it."""
    import mosaic_pretrain.commands.train as run

    folder, checkpoint, marker, named = forged
    monkeypatch.setattr(run, "check_recipe", lambda config: [])  # as for a bucket's checkpoint
    config = load_config(SMOKE, quick(data, folder.parent / "new", f"load_path={checkpoint}"))
    refused = rf"\(-> {re.escape(str(checkpoint))}\) is refused: its pickle refers to {named}"
    with pytest.raises(CheckpointError, match=refused):  # Composer links it into a temp folder
        run.train(config)
    assert not marker.exists()
    assert VALIDATION_VARIABLE not in os.environ  # only while a Trainer is built


validated = []


def record_validation(path, specs) -> bool:
    validated.append(Path(path).name)
    return True


def test_the_validation_hook_loads_good_checkpoints_and_keeps_a_users_own(run_folder, monkeypatch):
    user_validator = f"{__name__}.record_validation"
    monkeypatch.setenv(VALIDATION_VARIABLE, user_validator)
    with composer_loads_checked():
        state = safe_torch_load(str(run_folder / CHECKPOINT))
    assert state["state"]["timestamp"]["Timestamp"]["batch"] == 2
    assert validated == [CHECKPOINT]  # ours first, then the user's
    assert os.environ[VALIDATION_VARIABLE] == user_validator


def test_a_glue_starting_point_is_refused(forged, tmp_path, capsys):
    _, checkpoint, marker, named = forged
    sweep = {
        "run_name": "refused",
        "starting_point": str(checkpoint),
        "output_folder": str(tmp_path / "out"),
        "tasks": ["sst2"],
        "data": {"source": "local", "local": str(STANDINS)},
        "parallel": {"workers": 1, "device": "cpu"},
    }
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    assert main(["check", str(sweep_file)]) == 2
    err = capsys.readouterr().err
    assert f"problem: {refusal(checkpoint, named)}" in err
    assert main(["glue", str(sweep_file)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"mosaic-pretrain glue: error: {refusal(checkpoint, named)}")
    assert not marker.exists() and not (tmp_path / "out" / "jobs").exists()


def test_a_corrupt_checkpoint_is_named_corrupt_not_refused(run_folder, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run_folder / CHECKPOINT).read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"cut.pt is corrupt or not a Composer checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match=r"does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
