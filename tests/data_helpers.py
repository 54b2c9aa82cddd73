"""Small real-text fixtures for the data tests, cut from the shipped public-domain corpus."""

import json
import lzma
import os
from pathlib import Path

from mosaic_pretrain.data.tokenizer import DEFAULT_CORPUS


def corpus_texts(count: int, max_chars: int = 3000) -> list[str]:
    texts = []
    with lzma.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"][:max_chars])
            if len(texts) == count:
                break
    return texts


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({field: text, "source": "test"}) + "\n")
    return path


def shared_memory_of(dataset) -> dict[str, list[str]]:
    """Streaming's shared memory segments for `dataset` (by its prefix): those still named in
    /dev/shm, and those this process still holds open (file descriptors)."""
    prefix = f"{dataset._shm_prefix_int:06}_"
    named = sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(f"/dev/shm/{prefix}"):
            held.append(target)
    return {"named": named, "held": sorted(held)}
