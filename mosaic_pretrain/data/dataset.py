"""Streaming MLM dataset over MDS shards, and the dataloader that resumes mid-epoch.

Shards hold either `text` (tokenized here, on the fly) or `input_ids` (pre-tokenized by
`mosaic-pretrain convert --format tokens`, read directly). Either way a sample is one document
truncated to `max_seq_len` tokens including the tokenizer's special tokens, so both formats give
identical samples.
"""

import json
from pathlib import Path

import numpy as np
from streaming import StreamingDataLoader, StreamingDataset
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.data.collator import MLMCollator, Sample
from mosaic_pretrain.data.convert import MANIFEST
from mosaic_pretrain.data.tokenizer import tokenizer_fingerprint
from mosaic_pretrain.errors import DataError

INDEX = "index.json"
# Characters of text tokenized per wanted token before checking we have enough: English
# WordPiece averages about 4.5 characters per token, so 8 almost always suffices at once.
CHARACTERS_PER_TOKEN_BUDGET = 8


def _check_local_split(local: str, split: str | None) -> Path:
    """The split folder, its index readable and its shards present with the recorded sizes."""
    root = Path(local) / (split or "")
    index_path = root / INDEX
    if not index_path.exists():
        raise DataError(
            f"no MDS index at {index_path}; convert data with `mosaic-pretrain convert --out "
            f"{local}` or fix dataset.local / dataset.split"
        )
    try:
        shards = json.loads(index_path.read_text())["shards"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(
            f"MDS index {index_path} is corrupt ({type(error).__name__}); convert the data again"
        ) from None
    if not shards:
        raise DataError(f"MDS index {index_path} lists no shards; convert the data again")
    for shard in shards:
        stored = shard.get("zip_data") or shard["raw_data"]
        path = root / stored["basename"]
        raw_path = root / shard["raw_data"]["basename"]
        if raw_path.exists() and raw_path.stat().st_size == shard["raw_data"]["bytes"]:
            continue  # already decompressed by an earlier run
        if not path.exists():
            raise DataError(f"MDS shard {path} is missing; convert the data again")
        if path.stat().st_size != stored["bytes"]:
            raise DataError(
                f"MDS shard {path} has {path.stat().st_size} bytes, its index says "
                f"{stored['bytes']}: it is truncated or corrupt; convert the data again"
            )
    return root


def _check_tokenizer_matches(local: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """Pre-tokenized shards are only meaningful with the tokenizer that made them."""
    manifest_path = Path(local) / MANIFEST
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_text())
    if manifest["options"]["output_format"] != "tokens":
        return
    made_with = manifest["options"]["tokenizer_name"]
    if manifest["tokenizer"]["fingerprint"] != tokenizer_fingerprint(tokenizer):
        raise DataError(
            f"{local} was pre-tokenized with tokenizer {made_with!r} but the recipe's tokenizer "
            f"is {tokenizer.name_or_path!r}; set tokenizer_name to {made_with!r} or convert the "
            "data again with --tokenizer"
        )


class MLMStreamingDataset(StreamingDataset):
    """A `StreamingDataset` whose items are `Sample`s: token ids with special tokens, truncated.

    Args:
        local: local folder (the cache when `remote` is set).
        remote: `s3://`, `gs://`, ... folder, or None to read `local` directly.
        split: subfolder, e.g. `train` or `val`.
        tokenizer: the recipe's tokenizer.
        max_seq_len: tokens per sample, special tokens included.
        **streaming_kwargs: passed to `StreamingDataset` (shuffle, shuffle_seed, batch_size, ...).
    """

    def __init__(
        self,
        *,
        local: str,
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        remote: str | None = None,
        split: str | None = None,
        **streaming_kwargs,
    ):
        special = tokenizer.num_special_tokens_to_add(pair=False)
        if max_seq_len <= special:
            raise DataError(
                f"max_seq_len={max_seq_len} leaves no room for text: tokenizer "
                f"{tokenizer.name_or_path!r} adds {special} special tokens; use at least "
                f"{special + 1}"
            )
        if remote is None:
            _check_local_split(local, split)
            _check_tokenizer_matches(local, tokenizer)
        try:
            super().__init__(local=local, remote=remote, split=split, **streaming_kwargs)
        except (json.JSONDecodeError, KeyError) as error:
            raise DataError(
                f"MDS index under {local}/{split or ''} cannot be read ({error}); convert again"
            ) from None
        columns = set(self.shards[0].column_names)
        if "input_ids" in columns:
            self.column = "input_ids"
        elif "text" in columns:
            self.column = "text"
        else:
            raise DataError(
                f"MDS data under {local}/{split or ''} has columns {sorted(columns)}; need "
                "'text' or 'input_ids'"
            )
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.content_tokens = max_seq_len - special

    def get_item(self, sample_id: int, retry: int = 7) -> Sample:
        try:
            record = super().get_item(sample_id, retry)
        except (ValueError, KeyError, OSError, UnicodeDecodeError) as error:
            shard_id, _ = self.spanner[sample_id]
            raise DataError(
                f"sample {sample_id} cannot be decoded from shard {shard_id} "
                f"({type(error).__name__}: {error}); the shard is corrupt, convert the data again"
            ) from None
        if self.column == "input_ids":
            content = record["input_ids"][: self.content_tokens].tolist()
        else:
            content = self._leading_tokens(record["text"])
        ids = self.tokenizer.build_inputs_with_special_tokens(content)
        return Sample(np.asarray(ids, dtype=np.int64), sample_id)

    def _leading_tokens(self, text: str) -> list[int]:
        """The first `content_tokens` tokens of `text`, tokenizing only as much text as needed.

        Text is cut at whitespace, where WordPiece and byte-level BPE both start a new token, so
        the tokens before the cut are those of the whole text; if the prefix is too short it is
        doubled until it is not, or the whole text is used.
        """
        budget = self.content_tokens * CHARACTERS_PER_TOKEN_BUDGET
        while True:
            if len(text) <= budget:
                prefix, complete = text, True
            else:
                cut = text.rfind(" ", 0, budget)
                prefix, complete = text[: cut if cut > 0 else budget], False
            ids = self.tokenizer(prefix, add_special_tokens=False, verbose=False)["input_ids"]
            # One token beyond the cut-off proves the kept tokens did not end at the cut.
            if complete or len(ids) > self.content_tokens:
                return ids[: self.content_tokens]
            budget *= 2


class MLMDataLoader(StreamingDataLoader):
    """Counts samples (documents), not rows, so resuming is exact even when rows are packed."""

    def _get_batch_size(self, batch: dict) -> int:
        return len(batch["sample_index"])


def build_mlm_dataloader(
    dataset: MLMStreamingDataset,
    collator: MLMCollator,
    batch_size: int,
    num_workers: int = 0,
    drop_last: bool = True,
) -> MLMDataLoader:
    return MLMDataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collator,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
