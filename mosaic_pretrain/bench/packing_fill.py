"""How full the rows of a batch are at each sequence length, with and without packing.

A row of `max_seq_len` slots holds one document (cut at max_seq_len) or, with `packing`, several
(first-fit decreasing within each batch, data/collator.py). Padding slots are compute the model
skips when unpadded but a padded model (and every kernel sized by rows) pays for, so the fill
rate, real tokens over rows x max_seq_len, says how much of each batch is text. Also reported:
the rows per batch (what packing saves) and the share of the documents' tokens a row keeps
(the rest of a document longer than max_seq_len is not read: longer rows keep more).

Measured on the shipped public-domain corpus, converted pre-tokenized (whole documents), over
its whole train split in the training order (shuffled, seed 17); no GPU involved.
"""

import datetime
import statistics
import tempfile
from pathlib import Path

import numpy as np

from mosaic_pretrain.data.collator import pack_rows
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset
from mosaic_pretrain.data.tokenizer import load_tokenizer

WHOLE_DOCUMENTS = 1 << 30  # a max_seq_len no document reaches: the samples are whole documents


def _lengths(local: str, tokenizer, max_seq_len: int, batch_size: int) -> list[int]:
    """Sample lengths (special tokens included) in the order training reads them."""
    dataset = MLMStreamingDataset(
        local=local,
        split="train",
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        shuffle=True,
        shuffle_seed=17,
        batch_size=batch_size,
    )
    try:
        return [len(sample.input_ids) for sample in dataset]
    finally:
        dataset.release_shared_memory()


def fill_of_batches(lengths: list[int], max_seq_len: int, batch_size: int) -> dict:
    """Rows and fill over consecutive batches of `batch_size` samples (the last one dropped if
    short, as drop_last does), padded and packed."""
    batches = [
        lengths[start : start + batch_size]
        for start in range(0, len(lengths) - batch_size + 1, batch_size)
    ]
    real = sum(sum(batch) for batch in batches)
    packed_rows = [len(pack_rows(batch, max_seq_len)) for batch in batches]
    padded_slots = len(batches) * batch_size * max_seq_len
    return {
        "batches": len(batches),
        "real_tokens": real,
        "fill_padded": real / padded_slots,
        "fill_packed": real / (sum(packed_rows) * max_seq_len),
        "rows_per_batch_packed_mean": statistics.mean(packed_rows),
        "rows_per_batch_packed_min": min(packed_rows),
        "rows_per_batch_packed_max": max(packed_rows),
    }


def run_packing_fill(
    lengths: tuple[int, ...] = (128, 512, 1024),
    batch_sizes: tuple[int, ...] = (32, 128),
    work_dir: str | None = None,
) -> dict:
    tokenizer = load_tokenizer("bert-base-uncased")
    results = []
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        local = str(Path(scratch) / "tokens")
        convert(ConvertOptions(output_format="tokens"), local, progress=False, log=lambda _: None)
        documents = _lengths(local, tokenizer, WHOLE_DOCUMENTS, max(batch_sizes))
        whole = sum(documents)
        for max_seq_len in lengths:
            for batch_size in batch_sizes:
                samples = _lengths(local, tokenizer, max_seq_len, batch_size)
                row = {"max_seq_len": max_seq_len, "batch_size": batch_size}
                row.update(fill_of_batches(samples, max_seq_len, batch_size))
                row["document_tokens_kept"] = sum(samples) / whole
                row["documents_shorter_than_a_row"] = float(
                    np.mean(np.asarray(documents) < max_seq_len)
                )
                results.append(row)
    return {
        "date": datetime.date.today().isoformat(),
        "data": (
            f"shipped public-domain corpus, all of it as one train split ({len(documents):,} "
            "documents, "
            f"{whole:,} tokens with [CLS]/[SEP]; median document {int(np.median(documents)):,} "
            "tokens), bert-base-uncased, shuffled with seed 17"
        ),
        "results": results,
    }


def results_markdown(record: dict) -> str:
    lines = [
        "# Row fill at each sequence length: padded rows against packed rows",
        "",
        f"Data: {record['data']}. {record['date']}. Written by `scripts/bench_packing.py`.",
        "Fill: real tokens / (rows x max_seq_len). Kept: the share of the documents' tokens "
        "the rows hold (a document is cut at max_seq_len).",
        "",
        "| max_seq_len | samples per batch | fill, padded | fill, packed | rows per batch, packed "
        "(mean, min-max) | documents shorter than a row | tokens kept |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    notes = [
        "",
        "These documents are long (books and essays), so even padded rows are nearly full; "
        "short web documents (C4's) leave far more padding, which packing fills. C4 is not "
        "available offline, so that is not measured here.",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['max_seq_len']} | {row['batch_size']} | {row['fill_padded']:.1%} "
            f"| {row['fill_packed']:.1%} | {row['rows_per_batch_packed_mean']:.1f} "
            f"({row['rows_per_batch_packed_min']}-{row['rows_per_batch_packed_max']}) "
            f"| {row['documents_shorter_than_a_row']:.1%} | {row['document_tokens_kept']:.1%} |"
        )
    return "\n".join(lines + notes) + "\n"
