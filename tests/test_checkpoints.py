"""Repairing a checkpoint folder before autoresume: cut-short files set aside, `latest` relinked."""

import io
import os

import torch

from mosaic_pretrain.train.checkpoints import (
    INCOMPLETE_FOLDER,
    is_complete,
    repair_checkpoint_folder,
)


def write_checkpoint(path, batch, fraction=1.0):
    buffer = io.BytesIO()
    torch.save({"state": {"timestamp": batch, "weights": torch.randn(64, 64)}}, buffer)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_cut_short_checkpoints_are_set_aside_and_latest_points_at_the_newest_complete(tmp_path):
    write_checkpoint(tmp_path / "ep0-ba2-rank0.pt", 2)
    write_checkpoint(tmp_path / "ep0-ba4-rank0.pt", 4)
    write_checkpoint(tmp_path / "ep0-ba6-rank0.pt", 6, fraction=0.6)
    os.symlink("ep0-ba2-rank0.pt", tmp_path / "latest-rank0.pt")  # killed before relinking
    assert is_complete(tmp_path / "ep0-ba4-rank0.pt")
    assert not is_complete(tmp_path / "ep0-ba6-rank0.pt")

    repair = repair_checkpoint_folder(tmp_path)
    assert repair.resume_from == tmp_path / "ep0-ba4-rank0.pt" and repair.relinked
    assert os.readlink(tmp_path / "latest-rank0.pt") == "ep0-ba4-rank0.pt"
    assert not (tmp_path / "ep0-ba6-rank0.pt").exists()
    [aside] = (tmp_path / INCOMPLETE_FOLDER).iterdir()
    assert aside.name.startswith("ep0-ba6-rank0.pt.") and aside == repair.set_aside[0]

    # Nothing left to do the second time; a missing link is recreated.
    assert repair_checkpoint_folder(tmp_path).set_aside == []
    (tmp_path / "latest-rank0.pt").unlink()
    assert repair_checkpoint_folder(tmp_path).relinked


def test_a_folder_with_only_a_cut_short_checkpoint_starts_over(tmp_path):
    write_checkpoint(tmp_path / "ep0-ba2-rank0.pt", 2, fraction=0.3)
    os.symlink("ep0-ba2-rank0.pt", tmp_path / "latest-rank0.pt")
    repair = repair_checkpoint_folder(tmp_path)
    assert repair.resume_from is None and len(repair.set_aside) == 1
    assert not os.path.lexists(tmp_path / "latest-rank0.pt")
    assert repair_checkpoint_folder(tmp_path / "absent").resume_from is None
