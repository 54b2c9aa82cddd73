"""Where `eval-lengths` reads its documents: an MDS split written by `convert` (text or
pre-tokenized), local text files (read as `convert` reads them), or by default the shipped
corpus's validation documents: those `convert` with the built-in val fraction routes to `val`,
selected by convert's own plan and seeded draws.

A source gives each document's first tokens in a model's tokenizer, no special tokens added;
reading stops as soon as the caller has what it needs.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.data.convert import ConvertOptions, split_documents
from mosaic_pretrain.data.dataset import (
    INDEX,
    MLMStreamingDataset,
    leading_tokens,
    special_token_frame,
)
from mosaic_pretrain.data.sources import SourceOptions, expand_local_sources, iter_local_documents
from mosaic_pretrain.errors import DataError
from mosaic_pretrain.train.builders import BUILTIN_VAL_FRACTION

BUILTIN_SPLIT = "val"


@dataclass(frozen=True)
class Documents:
    """`tokens(tokenizer, count)`: each document's first `count` tokens (fewer when it is
    shorter), in source order."""

    description: str
    tokens: Callable[[PreTrainedTokenizerBase, int], Iterator[list[int]]]


def from_texts(description: str, texts: Callable[[], Iterator[str]]) -> Documents:
    def tokens(tokenizer: PreTrainedTokenizerBase, count: int) -> Iterator[list[int]]:
        for text in texts():
            yield leading_tokens(tokenizer, text, count)

    return Documents(description, tokens)


def builtin_documents() -> Documents:
    options = ConvertOptions(val_fraction=BUILTIN_VAL_FRACTION)
    return from_texts(
        f"the shipped corpus's {BUILTIN_SPLIT} documents ({Path(options.sources[0]).name}, "
        f"val_fraction={options.val_fraction}, seed {options.seed}, as convert splits it)",
        lambda: split_documents(options, BUILTIN_SPLIT),
    )


def mds_split(folder: Path) -> Path | None:
    """The MDS split `folder` names: itself when it holds an index, its `val` split when it is a
    conversion's output folder; None when it is neither."""
    if (folder / INDEX).is_file():
        return folder
    if (folder / BUILTIN_SPLIT / INDEX).is_file():
        return folder / BUILTIN_SPLIT
    return None


def mds_documents(split: Path) -> Documents:
    def tokens(tokenizer: PreTrainedTokenizerBase, count: int) -> Iterator[list[int]]:
        # Each sample is the document's first tokens framed by the special tokens, as training
        # reads it; a pre-tokenized split is checked against the tokenizer here.
        dataset = MLMStreamingDataset(
            local=str(split.parent),
            split=split.name,
            tokenizer=tokenizer,
            max_seq_len=count + sum(map(len, special_token_frame(tokenizer))),
            shuffle=False,
            batch_size=1,
        )
        start, end = len(dataset.prefix), len(dataset.suffix)
        try:
            for index in range(dataset.num_samples):
                ids = dataset[index].input_ids.tolist()
                yield ids[start : len(ids) - end]
        finally:
            dataset.release_shared_memory()

    return Documents(f"MDS split {split}", tokens)


def local_documents(sources: list[str], options: SourceOptions) -> Documents:
    missing = [source for source in sources if not Path(source).exists()]
    if missing:
        raise DataError(
            f"--data {missing[0]} does not exist; give an MDS split (or a convert output folder), "
            ".jsonl/.txt files, or folders of them"
        )
    files = expand_local_sources(sources)  # an unsupported file stops here
    shown = ", ".join(str(path) for path in files[:3]) + (" ..." if len(files) > 3 else "")
    return from_texts(
        f"{len(files)} file(s): {shown}", lambda: iter_local_documents(files, options)
    )


def resolve_documents(data: list[str] | None, options: SourceOptions) -> Documents:
    """`--data`: nothing (the shipped corpus's val documents), one MDS split or conversion
    folder, or text files and folders of them."""
    if not data:
        return builtin_documents()
    if len(data) == 1 and Path(data[0]).is_dir():
        split = mds_split(Path(data[0]))
        if split is not None:
            return mds_documents(split)
    return local_documents(list(data), options)
