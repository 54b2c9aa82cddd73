"""Shard contents against the hashes their MDS index records (`check --verify-hashes`).

The default check compares each shard's size with its index, which is instant but blind to
corruption that keeps the size (a flipped bit on disk, a bad copy). Hashing reads every byte, so
it is asked for explicitly. `mosaic-pretrain convert` records an xxh64 hash per shard file (fast,
not cryptographic: it detects damage, not tampering).
"""

import hashlib
import json
from pathlib import Path

import xxhash  # installed with mosaicml-streaming, whose MDS writer hashes with it

from mosaic_pretrain.errors import DataError

FILE_ENTRIES = ("raw_data", "zip_data")  # a shard's files: as written, and compressed
READ_BYTES = 1 << 22


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file, read in blocks (shards can be large), as MDS writes it."""
    if algorithm in xxhash.algorithms_available:
        hasher = getattr(xxhash, algorithm)()
    else:
        hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(READ_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


def _computable(recorded: dict[str, str]) -> str | None:
    """The recorded algorithm to check with: an xxhash one if there is one (fastest)."""
    usable = [
        name
        for name in recorded
        if name in xxhash.algorithms_available or name in hashlib.algorithms_available
    ]
    return min(usable, key=lambda name: (not name.startswith("xxh"), name), default=None)


def verify_split(root: Path, index_name: str = "index.json") -> None:
    """Each shard file present under `root` hashes to the value in the index; DataError with one
    problem per mismatching file, or one saying the index records no hashes to compare."""
    index_path = root / index_name
    shards = json.loads(index_path.read_text())["shards"]
    problems, unverifiable = [], 0
    for shard in shards:
        for entry in filter(None, (shard.get(key) for key in FILE_ENTRIES)):
            path = root / entry["basename"]
            if not path.exists():
                continue  # a compressed file removed after decompression, or the reverse
            algorithm = _computable(entry.get("hashes") or {})
            if algorithm is None:
                unverifiable += 1
                continue
            actual, expected = file_digest(path, algorithm), entry["hashes"][algorithm]
            if actual != expected:
                problems.append(
                    f"MDS shard {path} is corrupt: its {algorithm} hash is {actual}, its index "
                    f"says {expected}; convert the data again or download it again"
                )
    if unverifiable:
        problems.append(
            f"MDS index {index_path} records no hash this installation can compute for "
            f"{unverifiable} shard file(s), so they cannot be verified; convert the data again "
            "with mosaic-pretrain convert, which records xxh64 hashes"
        )
    if problems:
        raise DataError("; ".join(problems), problems)
