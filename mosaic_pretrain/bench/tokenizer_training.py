"""How fast `mosaic-pretrain tokenizer` trains, per tokenizer kind, on the shipped corpus.

Each kind is trained once, in this process, from the compressed corpus file as a user would
(reading, normalizing, pre-tokenizing and the trainer's own work all counted): documents and
megabytes of text per second over the whole run, with the result's tokens per word on the
held-back documents beside bert-base-uncased's.
"""

import datetime
import os
import platform
import tempfile
from pathlib import Path

import tokenizers

from mosaic_pretrain.data.tokenizer import DEFAULT_CORPUS
from mosaic_pretrain.data.tokenizer_training import (
    COMPARED_WITH,
    KINDS,
    TokenizerOptions,
    train_tokenizer,
)
from mosaic_pretrain.device_info import cpu_model


def run_tokenizer_benchmark(
    vocab_size: int = 30528,
    kinds: tuple[str, ...] = KINDS,
    max_documents: int | None = None,
    source: Path = DEFAULT_CORPUS,
) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for kind in kinds:
            options = TokenizerOptions(
                sources=(str(source),), kind=kind, vocab_size=vocab_size,
                max_documents=max_documents,
            )  # fmt: skip
            manifest = train_tokenizer(
                options, Path(scratch) / kind, progress=False, log=lambda line: None
            )
            read, held = manifest["read"], manifest["held_out"]
            results.append(
                {
                    "kind": kind,
                    "vocabulary": manifest["vocabulary"]["size"],
                    "trained_vocabulary": manifest["vocabulary"]["trained"],
                    "documents": read["documents"],
                    "megabytes": round(read["bytes"] / 2**20, 2),
                    "seconds": round(read["seconds"], 2),
                    "documents_per_s": round(read["documents_per_second"], 1),
                    "megabytes_per_s": round(read["megabytes_per_second"], 3),
                    "tokens_per_word": round(held["tokens_per_word"], 4) if held else None,
                    "reference_tokens_per_word": (
                        round(manifest[COMPARED_WITH]["tokens_per_word"], 4) if held else None
                    ),
                }
            )
    return {
        "device": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "date": datetime.date.today().isoformat(),
        "data": f"{source.name} (shipped public-domain corpus, xz-compressed JSON lines)",
        "vocab_size": vocab_size,
        "results": results,
    }


def results_markdown(record: dict) -> str:
    lines = [
        "# Tokenizer training speed (`mosaic-pretrain tokenizer`)",
        "",
        f"CPU: {record['device']} ({record['cpu_count']} cores visible); Python "
        f"{record['python']}, tokenizers {record['tokenizers']}; {record['date']}.",
        f"Data: {record['data']}; vocabulary asked {record['vocab_size']:,}. Timed: reading, "
        "normalizing and training. Written by `scripts/benchmark_tokenizer.py`.",
        "",
        "| kind | vocabulary (trained) | documents | MB | seconds | documents/s | MB/s "
        f"| tokens/word held out | {COMPARED_WITH} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['kind']} | {row['vocabulary']:,} ({row['trained_vocabulary']:,}) "
            f"| {row['documents']:,} | {row['megabytes']} | {row['seconds']} "
            f"| {row['documents_per_s']:,} | {row['megabytes_per_s']} "
            f"| {row['tokens_per_word']} | {row['reference_tokens_per_word']} |"
        )
    return "\n".join(lines) + "\n"
