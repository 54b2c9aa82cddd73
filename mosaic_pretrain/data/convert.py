"""`mosaic-pretrain convert`: documents -> MDS shards in `OUT/train` and `OUT/val`.

One reader walks the source in order; worker processes tokenize chunks of documents (to count
tokens, and to store `input_ids` when asked); the main process writes. The output is therefore
byte-identical whatever the number of workers.

Crash safety: each split is written to `OUT/.SPLIT.partial`, renamed to `OUT/SPLIT` once
complete, then recorded in `OUT/conversion.json`. A rerun skips splits recorded as complete
(and refuses if they were made with other options), and discards leftovers of an interrupted run
(a `.partial` folder, or a split folder not yet recorded) before writing that split again. A
half-written split never looks complete.
"""

import json
import multiprocessing
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from streaming import MDSWriter

from mosaic_pretrain.data.sources import (
    HF_PREFIX,
    SourceOptions,
    expand_local_sources,
    iter_hf_documents,
    iter_local_documents,
    local_files_record,
)
from mosaic_pretrain.data.tokenizer import DEFAULT_CORPUS, load_tokenizer, tokenizer_fingerprint
from mosaic_pretrain.errors import ConfigError, DataError
from mosaic_pretrain.folder_lock import FolderLock, LockRules
from mosaic_pretrain.ranges import SEED, Range, range_problems, ranged

MANIFEST = "conversion.json"
OUTPUT_FORMATS = ("text", "tokens")
COMPRESSIONS = ("zstd", "gzip", "snappy", "brotli", "none")
CHUNK_DOCUMENTS = 256  # documents per worker task: enough to amortise pickling
CHUNKS_IN_FLIGHT_PER_WORKER = 4  # bounds memory: the reader never runs far ahead of the workers
SIZE_UNITS = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")  # becomes a folder name under OUT
# Added to each split's MDS index.json, so a reader (local or remote) can check how it was made.
INDEX_KEY = "mosaic_pretrain"
TAKE_OVER = "--take-over-lock"  # the command line's way to take over another host's lock


def parse_size(text: str) -> int:
    """'64mb' -> 67108864; plain integers are bytes."""
    lowered = text.strip().lower()
    for unit, factor in SIZE_UNITS.items():
        if lowered.endswith(unit) and lowered[: -len(unit)].strip().isdigit():
            return int(lowered[: -len(unit)]) * factor
    if lowered.isdigit():
        return int(lowered)
    raise ConfigError(f"size {text!r} is not understood; write e.g. 64mb, 512kb or 1gb")


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines a conversion's output; recorded in the manifest.

    sources: local files/directories, or one `hf:NAME` Hugging Face dataset.
    output_format: `text` (tokenized while training) or `tokens` (pre-tokenized `input_ids`).
    val_fraction: for local sources, the share of documents routed to `val` (seeded).
    val_sources: for local sources, files that make up `val` instead.
    hf_config / hf_splits: the dataset config (e.g. `en` for C4) and (our split, its split) pairs.
    max_documents: stop each split's source after this many documents.
    """

    sources: tuple[str, ...] = (str(DEFAULT_CORPUS),)
    output_format: str = "text"
    tokenizer_name: str = "bert-base-uncased"
    val_fraction: float = ranged(0.0, Range(0, 1, high_open=True))
    val_sources: tuple[str, ...] = ()
    hf_config: str | None = None
    hf_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("val", "validation"))
    max_documents: int | None = ranged(None, Range(1, 2**53))
    seed: int = ranged(17, SEED)
    compression: str = "zstd"
    # streaming downloads and caches whole shards; its default is 64 MiB
    shard_size_bytes: int = ranged(1 << 26, Range(1 << 16, 1 << 32, reason="64kb to 4gb"))
    source_options: SourceOptions = field(default_factory=SourceOptions)

    def validate(self) -> None:
        problems = range_problems(self, rename=option_name)
        if self.output_format not in OUTPUT_FORMATS:
            problems.append(
                f"--format {self.output_format!r} is unknown; choose one of "
                f"{', '.join(OUTPUT_FORMATS)}"
            )
        if self.compression not in COMPRESSIONS:
            problems.append(
                f"--compression {self.compression!r} is unknown; choose one of "
                f"{', '.join(COMPRESSIONS)}"
            )
        if self.val_fraction and self.val_sources:
            problems.append("give either --val-fraction or --val-source, not both")
        if self.is_hf and (self.val_fraction or self.val_sources or len(self.sources) != 1):
            problems.append(
                "a Hugging Face source is one hf:NAME with its own splits (--hf-split), without "
                "--val-fraction or --val-source"
            )
        for ours, _ in self.hf_splits:
            if not SPLIT_NAME.fullmatch(ours):
                problems.append(
                    f"--hf-split: split name {ours!r} must be letters, digits, '_' or '-'"
                )
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def is_hf(self) -> bool:
        return any(source.startswith(HF_PREFIX) for source in self.sources)

    def as_record(self) -> dict:
        """The options as compared on a rerun: local paths resolved, and each local file's size
        and modification time, so changed data or a different working folder is noticed."""
        record = json.loads(json.dumps(asdict(self)))  # tuples become lists, as read back
        if not self.is_hf:
            for key in ("sources", "val_sources"):
                record[key] = [str(Path(source).resolve()) for source in record[key]]
            files = expand_local_sources(list(self.sources) + list(self.val_sources))
            record["source_files"] = local_files_record(files)
        return record

    def split_names(self) -> tuple[str, ...]:
        if self.is_hf:
            return tuple(ours for ours, _ in self.hf_splits)
        return ("train", "val")


@dataclass
class SplitSummary:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class _Job:
    """One pass over one source, writing one split or (with a val fraction) two."""

    splits: tuple[str, ...]
    documents: Callable[[], Iterator[str]]
    route: Callable[[], Callable[[], str]]  # a fresh document -> split chooser per pass


def _plan(options: ConvertOptions) -> list[_Job]:
    limit = options.max_documents
    read = options.source_options

    def limited(make: Callable[[], Iterator[str]]) -> Callable[[], Iterator[str]]:
        return lambda: islice(make(), limit)

    def always(split: str):
        return lambda: lambda: split

    if options.is_hf:
        name = options.sources[0][len(HF_PREFIX) :]
        return [
            _Job(
                (ours,),
                limited(lambda hf=theirs: iter_hf_documents(name, options.hf_config, hf, read)),
                always(ours),
            )
            for ours, theirs in options.hf_splits
        ]
    train_files = expand_local_sources(list(options.sources))
    jobs = []
    if options.val_fraction:

        def by_fraction() -> Callable[[], str]:
            rng = np.random.default_rng(options.seed)
            return lambda: "val" if rng.random() < options.val_fraction else "train"

        jobs.append(
            _Job(
                ("train", "val"),
                limited(lambda: iter_local_documents(train_files, read)),
                by_fraction,
            )
        )
    else:
        jobs.append(
            _Job(
                ("train",),
                limited(lambda: iter_local_documents(train_files, read)),
                always("train"),
            )
        )
    if options.val_sources:
        val_files = expand_local_sources(list(options.val_sources))
        jobs.append(
            _Job(("val",), limited(lambda: iter_local_documents(val_files, read)), always("val"))
        )
    return jobs


def split_documents(options: ConvertOptions, split: str) -> Iterator[str]:
    """The documents `convert(options)` writes to `split`, in source order, read by the same plan
    and routed by the same seeded draws, without tokenizing or writing anything (an evaluation
    of a converted split's documents without its shards)."""
    if split not in options.split_names():
        raise ConfigError(f"split {split!r} is not one of {', '.join(options.split_names())}")
    for job in _plan(options):
        if split not in job.splits:
            continue
        route = job.route()
        for text in job.documents():
            if route() == split:  # every document draws, as in _run_job, so the routes agree
                yield text


# --- tokenizing in worker processes -----------------------------------------------------------

_worker_tokenizer = None


def _init_worker(tokenizer_name: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_name)


def _tokenize_chunk(texts: list[str]) -> list[np.ndarray]:
    encoded = _worker_tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in encoded]


def _chunks(documents: Iterable[str]) -> Iterator[list[str]]:
    iterator = iter(documents)
    while chunk := list(islice(iterator, CHUNK_DOCUMENTS)):
        yield chunk


def tokenized_documents(
    documents: Iterable[str], tokenizer_name: str, workers: int
) -> Iterator[tuple[str, np.ndarray]]:
    """(text, token ids) pairs in source order, tokenized by `workers` processes.

    Workers are spawned, so a script calling this with workers > 1 needs the usual
    `if __name__ == "__main__":` guard.
    """
    if workers <= 1:
        _init_worker(tokenizer_name)
        for chunk in _chunks(documents):
            yield from zip(chunk, _tokenize_chunk(chunk), strict=True)
        return
    # spawn: no forked copies of the tokenizer's threads. An executor (unlike multiprocessing's
    # Pool) fails with BrokenProcessPool when a worker dies instead of waiting forever.
    try:
        yield from _tokenized_in_pool(documents, tokenizer_name, workers)
    except BrokenProcessPool:
        raise DataError(
            "a tokenizing worker process died (killed, or out of memory); rerun, perhaps with "
            "fewer --workers"
        ) from None


def _tokenized_in_pool(documents: Iterable[str], tokenizer_name: str, workers: int):
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(tokenizer_name,),
    ) as pool:
        in_flight: deque = deque()
        for chunk in _chunks(documents):
            in_flight.append((chunk, pool.submit(_tokenize_chunk, chunk)))
            if len(in_flight) >= CHUNKS_IN_FLIGHT_PER_WORKER * workers:
                done, result = in_flight.popleft()
                yield from zip(done, result.result(), strict=True)
        while in_flight:
            done, result = in_flight.popleft()
            yield from zip(done, result.result(), strict=True)


# --- writing ----------------------------------------------------------------------------------


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path} is corrupt ({error.msg}); delete {out} and convert again"
        ) from None


def _write_manifest(out: Path, manifest: dict) -> None:
    temporary = out / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, out / MANIFEST)


def _differing_keys(old: dict, new: dict) -> list[str]:
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def token_dtype(vocabulary_size: int) -> str:
    """The smallest unsigned integer type that holds every token id."""
    return "uint16" if vocabulary_size <= np.iinfo(np.uint16).max + 1 else "uint32"


def _directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.iterdir() if file.is_file())


# The command-line option of each ConvertOptions field, where it is not --field-name.
OPTION_NAMES = {
    "shard_size_bytes": "--shard-size",
    "tokenizer_name": "--tokenizer",
    "output_format": "--format",
}
# Tokenizing processes: more than any machine's cores is a typo.
WORKERS = Range(1, 256)


def option_name(field_name: str) -> str:
    return OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def convert(
    options: ConvertOptions,
    out: str | Path,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    take_over_lock: bool = False,
    wait_for_lock: bool = False,
) -> dict[str, SplitSummary]:
    """Run the conversion; returns a summary per split written (complete splits are skipped).

    The output folder is locked for the conversion: another one into it is refused (or, with
    `wait_for_lock`, waited for: then it has usually done the work). `take_over_lock` takes
    over another host's lock at once (see `mosaic_pretrain.folder_lock`)."""
    options.validate()
    if (problem := WORKERS.problem("--workers", workers)) is not None:
        raise ConfigError(problem)
    out = Path(out)
    rules = LockRules(take_over=take_over_lock, timeout_name=None, take_over_name=TAKE_OVER)
    what = f"conversion output {out}"
    with FolderLock(out, what, "choose another --out", rules, wait=wait_for_lock):
        return _convert(options, out, workers, overwrite, progress, log)


def _convert(
    options: ConvertOptions,
    out: Path,
    workers: int,
    overwrite: bool,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, SplitSummary]:
    record = options.as_record()
    manifest = _read_manifest(out)
    ours = [out / split for split in options.split_names()]
    if manifest is None and not overwrite and (existing := [p for p in ours if p.exists()]):
        raise DataError(
            f"{existing[0]} exists but no conversion record ({MANIFEST}) says what made it; "
            "choose another --out, or pass --overwrite to replace it"
        )
    start_over = manifest is None or overwrite
    if manifest is not None and manifest["options"] != record:
        differing = ", ".join(_differing_keys(manifest["options"], record))
        if manifest["splits"] and not overwrite:
            raise DataError(
                f"{out} holds a conversion made with other options ({differing}); choose another "
                "--out, or pass --overwrite to replace it"
            )
        log(f"starting over in {out}: the options differ from the last run's ({differing})")
        start_over = True
    tokenizer = load_tokenizer(options.tokenizer_name)  # fail before any work is done
    if start_over:
        tokenizer_record = {"size": len(tokenizer), "fingerprint": tokenizer_fingerprint(tokenizer)}
        manifest = {"options": record, "tokenizer": tokenizer_record, "splits": {}}
        # Recorded first: if we die while removing, a rerun finds no split marked complete.
        _write_manifest(out, manifest)
        for folder in ours + [out / f".{p.name}.partial" for p in ours]:
            if folder.exists():
                shutil.rmtree(folder)
    columns = (
        {"input_ids": f"ndarray:{token_dtype(len(tokenizer))}"}
        if options.output_format == "tokens"
        else {"text": "str"}
    )
    summaries: dict[str, SplitSummary] = {}
    for job in _plan(options):
        if all(split in manifest["splits"] for split in job.splits):
            log(f"{', '.join(job.splits)}: already complete in {out}, skipping")
            continue
        summaries.update(
            _run_job(job, out, options, manifest["tokenizer"], columns, workers, progress, log)
        )
        for split in job.splits:
            manifest["splits"][split] = asdict(summaries[split])
        _write_manifest(out, manifest)
    for split, summary in summaries.items():
        log(
            f"{split}: {summary.documents:,} documents, {summary.tokens:,} tokens, "
            f"{summary.bytes / 2**20:,.1f} MiB in {out / split} ({summary.seconds:.1f} s)"
        )
    return summaries


def _run_job(
    job: _Job,
    out: Path,
    options: ConvertOptions,
    tokenizer_record: dict,
    columns: dict[str, str],
    workers: int,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, SplitSummary]:
    from tqdm import tqdm

    partials = {split: out / f".{split}.partial" for split in job.splits}
    for split, partial in partials.items():
        for leftover in (partial, out / split):
            if leftover.exists():
                log(f"{split}: removing {leftover}, left unfinished by an interrupted run")
                shutil.rmtree(leftover)
    compression = None if options.compression == "none" else options.compression
    writers = {
        split: MDSWriter(
            out=str(partial),
            columns=columns,
            compression=compression,
            hashes=["xxh64"],
            size_limit=options.shard_size_bytes,
            progress_bar=False,
        )
        for split, partial in partials.items()
    }
    summaries = {split: SplitSummary() for split in job.splits}
    started = time.perf_counter()
    route = job.route()
    bar = tqdm(desc=f"converting {'+'.join(job.splits)}", unit=" docs", disable=not progress)
    tokens_total = 0
    try:
        pairs = tokenized_documents(job.documents(), options.tokenizer_name, workers)
        for number, (text, ids) in enumerate(pairs, start=1):
            split = route()
            if options.output_format == "tokens":
                writers[split].write({"input_ids": ids.astype(columns["input_ids"][8:])})
            else:
                writers[split].write({"text": text})
            summaries[split].documents += 1
            summaries[split].tokens += len(ids)
            tokens_total += len(ids)
            bar.update(1)
            if number % CHUNK_DOCUMENTS == 0:
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{tokens_total / elapsed:,.0f} tokens/s")
    finally:
        bar.close()
    for split, writer in writers.items():
        writer.finish()
        if summaries[split].documents == 0:
            raise DataError(
                f"split {split!r} got no documents from {', '.join(options.sources)}; check the "
                "source or lower --val-fraction"
            )
    seconds = time.perf_counter() - started
    stamp = {"format": options.output_format, "tokenizer": tokenizer_record}
    for split, partial in partials.items():
        index_path = partial / "index.json"
        index = json.loads(index_path.read_text())
        index[INDEX_KEY] = stamp
        index_path.write_text(json.dumps(index, sort_keys=True))
        os.replace(partial, out / split)
        summaries[split].bytes = _directory_bytes(out / split)
        summaries[split].seconds = seconds
    return summaries
