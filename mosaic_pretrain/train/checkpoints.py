"""A checkpoint folder after a crash, made safe to resume from.

Composer writes a checkpoint straight to its final name, then points `latest-rank0.pt` at it. A
process killed (or out of disk) mid-write leaves a file cut short under a normal name; killed
between the two steps, it leaves no `latest` link. Before an autoresume we therefore set aside
every checkpoint that is not complete (moved to `incomplete/`, never deleted, never loaded) and
point `latest` at the newest complete one, so the run continues from it and later saves under
the same name are not refused.
"""

import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^ep(\d+)-ba(\d+)-rank(\d+)\.pt$")
INCOMPLETE_FOLDER = "incomplete"


def latest_link(folder: Path, rank: int = 0) -> Path:
    return folder / f"latest-rank{rank}.pt"


def is_complete(path: Path) -> bool:
    """torch.save writes a zip archive whose directory comes last, on close: a file cut short
    has none. Cheap: reads the directory, not the tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def checkpoints_by_batch(folder: Path, rank: int = 0) -> list[Path]:
    """The folder's checkpoints of `rank` (not the `latest` link), oldest first."""
    found = []
    for path in folder.glob("ep*-ba*-rank*.pt"):
        match = CHECKPOINT_NAME.match(path.name)
        if match and int(match.group(3)) == rank and not path.is_symlink():
            found.append((int(match.group(2)), path))
    return [path for _, path in sorted(found)]


def folder_checkpoint(folder: Path, rank: int = 0) -> Path | None:
    """The checkpoint a folder of them stands for: where `latest` points, else the newest
    complete one (a WSD run's `stable/` folder has no `latest`); None when it holds none."""
    link = latest_link(folder, rank)
    if link.exists():
        return link.resolve()
    complete = [path for path in checkpoints_by_batch(folder, rank) if is_complete(path)]
    return complete[-1] if complete else None


@dataclass
class Repair:
    set_aside: list[Path] = field(default_factory=list)
    resume_from: Path | None = None
    relinked: bool = False


def repair_checkpoint_folder(folder: str | Path, rank: int = 0) -> Repair:
    """Set aside incomplete checkpoints and link `latest` to the newest complete one."""
    folder = Path(folder)
    repair = Repair()
    if not folder.is_dir():
        return repair
    complete = []
    for path in checkpoints_by_batch(folder, rank):
        if is_complete(path):
            complete.append(path)
            continue
        aside = folder / INCOMPLETE_FOLDER / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"
        aside.parent.mkdir(exist_ok=True)
        path.rename(aside)
        repair.set_aside.append(aside)
        logger.warning(
            "checkpoint %s is incomplete (its run died while writing it); moved to %s",
            path,
            aside,
        )
    link = latest_link(folder, rank)
    if not complete:
        if link.is_symlink():
            link.unlink()  # it can only point at something set aside or gone
        return repair
    newest = complete[-1]
    repair.resume_from = newest
    if not link.exists() or link.resolve() != newest.resolve():
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(newest.name, link)
        repair.relinked = True
        logger.warning("%s now points at %s, the newest complete checkpoint", link, newest.name)
    return repair
