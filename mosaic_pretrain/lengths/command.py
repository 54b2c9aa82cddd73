"""`eval-lengths`: load each model, form its rows from the documents, score every length its
positions allow, and write the report."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mosaic_pretrain.callbacks.run_record import code_version
from mosaic_pretrain.data.sources import SourceOptions
from mosaic_pretrain.data.tokenizer import tokenizer_fingerprint
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.lengths.documents import Documents, resolve_documents
from mosaic_pretrain.lengths.evaluate import pick_device, precision_of, score_rows
from mosaic_pretrain.lengths.models import EvalModel, labels_for, load_model
from mosaic_pretrain.lengths.report import render_table, scored, skipped, write_report
from mosaic_pretrain.lengths.rows import (
    MLM_PROBABILITY,
    Selection,
    content_tokens,
    form_rows,
    select_documents,
)

logger = logging.getLogger(__name__)

ROWS_RULE = (
    "row of length L = [CLS] + the document's first L-2 tokens + [SEP] (the tokenizer's own "
    "special tokens); only documents with at least (longest L - 2) tokens are used, so every "
    "length scores the same documents; each model uses its own tokenizer"
)
MASKING_RULE = (
    "15% of non-special tokens, of those 80% [MASK], 10% random, 10% kept; drawn once per "
    "document for its longest row, so positions of the shared prefix are masked alike at "
    "every length"
)


@dataclass(frozen=True)
class EvalOptions:
    models: tuple[str, ...]
    lengths: tuple[int, ...]
    data: tuple[str, ...] = ()
    out: Path = Path("runs/eval-lengths")
    labels: tuple[str, ...] = ()
    batch_size: int = 8
    seed: int = 17
    device: str = "auto"
    min_documents: int = 8
    max_documents: int = 64
    source_options: SourceOptions = field(default_factory=SourceOptions)

    def validate(self) -> None:
        problems = [
            f"{flag} must be at least 1, got {value}"
            for flag, value in (
                ("--batch-size", self.batch_size),
                ("--min-documents", self.min_documents),
                ("--max-documents", self.max_documents),
            )
            if value < 1
        ]
        if self.max_documents < self.min_documents:
            problems.append(
                f"--max-documents {self.max_documents} is below --min-documents "
                f"{self.min_documents}"
            )
        if not self.models:
            problems.append("give at least one MODEL")
        if problems:
            raise ConfigError("; ".join(problems), problems)


def eval_lengths(options: EvalOptions) -> tuple[dict, str, list[Path]]:
    """Scores every model at every length; returns the report, its console table and files."""
    options.validate()
    device = pick_device(options.device)
    lengths = list(options.lengths)
    documents = resolve_documents(list(options.data), options.source_options)
    labels = labels_for(list(options.models), list(options.labels))
    selections: dict[str, Selection] = {}  # by tokenizer: models sharing one share their rows
    entries = []
    for text, label in zip(options.models, labels, strict=True):
        loaded = load_model(text, label)
        fingerprint = tokenizer_fingerprint(loaded.tokenizer)
        if fingerprint not in selections:
            selections[fingerprint] = _select(loaded, documents, lengths, options)
        entries.append(_evaluate(loaded, selections[fingerprint], lengths, options, device))
        del loaded  # one model in memory at a time
    report = {
        "command": "eval-lengths",
        "code_version": code_version(),
        "lengths": lengths,
        "data": documents.description,
        "rows": {
            "rule": ROWS_RULE,
            "summary": _summary(entries, lengths),
        },
        "masking": {"rule": MASKING_RULE, "probability": MLM_PROBABILITY, "seed": options.seed},
        "device": {"type": device.type, "precision": precision_of(device)},
        "batch_size": options.batch_size,
        "models": entries,
    }
    files = write_report(report, Path(options.out))
    return report, render_table(report), files


def _select(
    loaded: EvalModel, documents: Documents, lengths: list[int], options: EvalOptions
) -> Selection:
    needed = content_tokens(loaded.tokenizer, lengths[-1])
    for length in lengths:
        content_tokens(loaded.tokenizer, length)  # each length must leave room for text
    return select_documents(
        documents.tokens(loaded.tokenizer, needed),
        needed,
        lengths,
        options.min_documents,
        options.max_documents,
        documents.description,
    )


def _evaluate(
    loaded: EvalModel, selection: Selection, lengths: list[int], options: EvalOptions, device
) -> dict:
    limit = loaded.position_limit
    runnable = [length for length in lengths if limit is None or length <= limit]
    model = loaded.model.to(device).eval()
    results = []
    rows = []
    if runnable:
        rows = form_rows(
            selection.contents, runnable, loaded.tokenizer, options.seed, longest=lengths[-1]
        )
    for length_rows in rows:
        score = score_rows(model, length_rows, options.batch_size, device)
        logger.info("%s at %d: loss %.4f", loaded.label, length_rows.length, score.loss)
        results.append(
            scored(
                length_rows.length, score.loss_sum, score.correct, score.masked_tokens, score.rows
            )
        )
    for length in lengths:
        if length not in runnable:
            results.append(skipped(length, limit))
    results.sort(key=lambda entry: entry["length"])
    return {
        "label": loaded.label,
        "path": str(loaded.path),
        "kind": loaded.kind,
        "loaded": str(loaded.source),
        "model_type": loaded.model_type,
        "position_limit": limit,
        "tokenizer": f"{loaded.tokenizer.name_or_path} ({len(loaded.tokenizer):,} tokens)",
        "documents": len(selection.contents),
        "documents_read": selection.read,
        "results": results,
    }


def _summary(entries: list[dict], lengths: list[int]) -> str:
    counts = sorted({entry["documents"] for entry in entries})
    shown = "/".join(map(str, counts))
    return f"[CLS] + first L-2 tokens + [SEP] of the same {shown} documents at every L"
