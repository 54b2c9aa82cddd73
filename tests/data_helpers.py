"""Small real-text fixtures for the data tests, cut from the shipped public-domain corpus."""

import json
import lzma
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
