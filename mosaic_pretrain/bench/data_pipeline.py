"""Tokens per second one CPU process feeds to training, per data path.

Measured in one run on the same documents (the shipped public-domain corpus, converted here):
  - `pretokenized`: MDS `input_ids` shards -> MLMStreamingDataset -> our MLMCollator;
  - `text`: MDS `text` shards, tokenized on the fly -> MLMStreamingDataset -> our MLMCollator;
  - `hf_collator`: the reference, transformers' `DataCollatorForLanguageModeling`, on the same
    tokenized samples already in memory (collation alone, so it is an upper bound for that path);
  - `our_collator`: our collator alone on those same in-memory samples, for a like-for-like.
Each path runs in this process with no dataloader workers, so the number is per worker process.
Tokens counted are real (non-padding) tokens per second, the work the model does; each path is
timed over the same batches several times and the median pass reported.
"""

import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import DataCollatorForLanguageModeling

from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.device_info import cpu_model


def _time_batches(make_batch, batches: int, repeats: int) -> tuple[float, int]:
    """(median seconds over `repeats` passes, real tokens per pass) for `batches` calls each,
    after one warm-up call."""
    make_batch(0)
    passes = []
    for _ in range(repeats):
        tokens = 0
        started = time.perf_counter()
        for number in range(1, batches + 1):
            batch = make_batch(number)
            tokens += int((batch["attention_mask"] != 0).sum())
        passes.append(time.perf_counter() - started)
    return statistics.median(passes), tokens


def run_data_benchmark(
    batch_size: int = 256,
    max_seq_len: int = 128,
    batches: int = 12,
    mlm_probability: float = 0.3,
    repeats: int = 5,
    work_dir: str | None = None,
) -> dict:
    tokenizer = load_tokenizer("bert-base-uncased")
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        datasets = {}
        for output_format in ("tokens", "text"):
            out = Path(scratch) / output_format
            convert(
                ConvertOptions(output_format=output_format),
                out,
                progress=False,
                log=lambda line: None,
            )
            datasets[output_format] = MLMStreamingDataset(
                local=str(out),
                split="train",
                tokenizer=tokenizer,
                max_seq_len=max_seq_len,
                shuffle=True,
                shuffle_seed=0,
                batch_size=batch_size,
            )
        available = len(datasets["tokens"])
        if (batches + 1) * batch_size > available:
            batches = available // batch_size - 1
        collator = MLMCollator(tokenizer, mlm_probability, max_seq_len, seed=0)

        def from_dataset(dataset):
            def make_batch(number: int):
                start = number * batch_size
                return collator([dataset[i] for i in range(start, start + batch_size)])

            return make_batch

        in_memory = [datasets["tokens"][i] for i in range((batches + 1) * batch_size)]
        hf_collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=mlm_probability,
            pad_to_multiple_of=max_seq_len,
            return_tensors="pt",
        )
        hf_samples = [{"input_ids": sample.input_ids.tolist()} for sample in in_memory]

        def slice_of(items, number):
            return items[number * batch_size : (number + 1) * batch_size]

        paths = {
            "pretokenized": from_dataset(datasets["tokens"]),
            "text": from_dataset(datasets["text"]),
            "hf_collator": lambda number: hf_collator(slice_of(hf_samples, number)),
            "our_collator": lambda number: collator(slice_of(in_memory, number)),
        }
        results = []
        for name, make_batch in paths.items():
            seconds, tokens = _time_batches(make_batch, batches, repeats)
            results.append(
                {
                    "path": name,
                    "batches": batches,
                    "batch_size": batch_size,
                    "real_tokens": tokens,
                    "median_seconds": round(seconds, 4),
                    "repeats": repeats,
                    "tokens_per_s": round(tokens / seconds),
                }
            )
        for dataset in datasets.values():
            dataset.release_shared_memory()
    return {
        "device": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "date": datetime.date.today().isoformat(),
        "data": "shipped public-domain corpus (3,486 train documents), shuffled",
        "max_seq_len": max_seq_len,
        "mlm_probability": mlm_probability,
        "results": results,
    }


def results_markdown(record: dict) -> str:
    lines = [
        "# Data pipeline: real tokens per second per CPU process",
        "",
        f"CPU: {record['device']} ({record['cpu_count']} cores visible); Python "
        f"{record['python']}, torch {record['torch']}, transformers {record['transformers']}; "
        f"{record['date']}.",
        f"Data: {record['data']}; max_seq_len {record['max_seq_len']}, masking "
        f"{record['mlm_probability']}. Written by `scripts/bench_data.py`.",
        "",
        "| path | batches x size | real tokens | median seconds | real tokens/s |",
        "|---|---|---:|---:|---:|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['path']} | {row['batches']} x {row['batch_size']} | {row['real_tokens']:,} "
            f"| {row['median_seconds']:.3f} | {row['tokens_per_s']:,} |"
        )
    return "\n".join(lines) + "\n"
