"""Where documents come from: local `.jsonl` / `.txt` files (plain or compressed) or a Hugging
Face dataset, as one stream of strings.

Bad input stops with a `DataError` naming the file and line: a missing text field, invalid UTF-8,
an empty document (unless skipping them was asked for). Nothing is silently dropped.
"""

import bz2
import gzip
import json
import lzma
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mosaic_pretrain.errors import DataError

HF_PREFIX = "hf:"
COMPRESSED_OPENERS: dict[str, Callable[..., IO]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
DOCUMENT_SUFFIXES = (".jsonl", ".txt")
TXT_SPLITS = ("paragraphs", "lines", "file")


@dataclass(frozen=True)
class SourceOptions:
    """How to read documents out of a source.

    text_field: the JSON key (or dataset column) holding the text.
    txt_split: for `.txt` files, what a document is: blank-line separated `paragraphs`, single
        `lines`, or the whole `file`.
    skip_empty: drop empty documents instead of stopping at the first.
    """

    text_field: str = "text"
    txt_split: str = "paragraphs"
    skip_empty: bool = False


def _suffixes(path: Path) -> tuple[str, str | None]:
    """(document suffix, compression suffix or None), e.g. ('.jsonl', '.xz')."""
    compression = path.suffix if path.suffix in COMPRESSED_OPENERS else None
    inner = Path(path.stem).suffix if compression else path.suffix
    return inner, compression


def expand_local_sources(sources: list[str]) -> list[Path]:
    """Files named directly, or found (sorted) inside named directories."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _suffixes(p)[0] in DOCUMENT_SUFFIXES)
            if not found:
                raise DataError(
                    f"{path}: no .jsonl or .txt files (plain, .gz, .bz2 or .xz) in this directory"
                )
            files.extend(found)
        elif path.is_file():
            if _suffixes(path)[0] not in DOCUMENT_SUFFIXES:
                raise DataError(
                    f"{path}: unsupported file type; use .jsonl or .txt, optionally compressed "
                    "with .gz, .bz2 or .xz"
                )
            files.append(path)
        else:
            raise DataError(
                f"{path}: no such file or directory (for a Hugging Face dataset write "
                f"{HF_PREFIX}NAME, e.g. {HF_PREFIX}allenai/c4)"
            )
    return files


def local_files_record(files: list[Path]) -> list[list]:
    """Each file's resolved path, size and modification time: what a rerun compares to notice
    changed data (or a different working folder)."""
    return [[str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] for path in files]


def _open_text(path: Path) -> IO[str]:
    opener = COMPRESSED_OPENERS.get(_suffixes(path)[1] or "", open)
    return opener(path, "rt", encoding="utf-8", errors="strict")


def iter_file_documents(path: Path, options: SourceOptions) -> Iterator[str]:
    """Documents of one local file, in file order."""
    kind = _suffixes(path)[0]
    line_number = 0
    try:
        with _open_text(path) as handle:
            if kind == ".jsonl":
                for line_number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield from _checked(
                            _json_text(line, path, line_number, options), path, line_number, options
                        )
            elif options.txt_split == "file":
                yield from _checked(handle.read(), path, 1, options)
            elif options.txt_split == "lines":
                for line_number, line in enumerate(handle, start=1):
                    yield from _checked(line.rstrip("\n"), path, line_number, options)
            else:
                yield from _paragraphs(handle, path, options)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: invalid UTF-8 after line {line_number} ({error.reason} at byte "
            f"{error.start} of a read block); re-encode the file as UTF-8 (e.g. with iconv)"
        ) from None
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile, OSError) as error:
        raise DataError(f"{path}: cannot be read ({error}); is the file complete?") from None


def _json_text(line: str, path: Path, line_number: int, options: SourceOptions) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{line_number}: a JSON line must be an object with a text field")
    return _text_of(record, options.text_field, f"{path}:{line_number}")


def _text_of(record: dict, text_field: str, where: str) -> str:
    """The record's text, or a one-line error saying where it is missing or not a string."""
    if text_field not in record:
        raise DataError(f"{where}: no {text_field!r} field; name the text field with --text-field")
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def _paragraphs(handle: IO[str], path: Path, options: SourceOptions) -> Iterator[str]:
    lines: list[str] = []
    for line in handle:
        if line.strip():
            lines.append(line.rstrip("\n"))
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def _checked(text: str, path: Path | str, line_number: int, options: SourceOptions):
    """Yield the text, or nothing for a skipped empty one; stop on an empty one otherwise."""
    if text.strip():
        yield text
    elif not options.skip_empty:
        raise DataError(
            f"{path}:{line_number}: empty document; remove it or pass --skip-empty to drop "
            "empty documents"
        )


def iter_local_documents(files: list[Path], options: SourceOptions) -> Iterator[str]:
    for path in files:
        yield from iter_file_documents(path, options)


def iter_hf_documents(
    name: str, config: str | None, split: str, options: SourceOptions
) -> Iterator[str]:
    """A Hugging Face dataset split, streamed (nothing is downloaded in full)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading a Hugging Face dataset needs the `datasets` package: "
            "pip install 'mosaic_pretrain[hf]'"
        ) from None
    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as error:
        raise DataError(
            f"Hugging Face dataset {name!r} (config {config!r}, split {split!r}) cannot be "
            f"opened ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "check the name and network access, or convert local files instead"
        ) from None
    for row_number, row in enumerate(stream, start=1):
        text = _text_of(row, options.text_field, f"{name}[{split}] row {row_number}")
        yield from _checked(text, f"{name}[{split}]", row_number, options)
