"""Streaming MLM dataset over MDS shards, and the dataloader that resumes mid-epoch.

Shards hold either `text` (tokenized here, on the fly) or `input_ids` (pre-tokenized by
`mosaic-pretrain convert --format tokens`, read directly). Either way a sample is one document
truncated to `max_seq_len` tokens including the tokenizer's special tokens, so both formats give
identical samples.
"""

import atexit
import gc
import json
import os
from pathlib import Path

import numpy as np
from streaming import Stream, StreamingDataLoader, StreamingDataset
from streaming.base.shared import SharedMemory as StreamingSharedMemory
from streaming.base.shared import _get_path as shared_memory_name
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.data.collator import MLMCollator, Sample
from mosaic_pretrain.data.convert import INDEX_KEY
from mosaic_pretrain.data.tokenizer import tokenizer_fingerprint
from mosaic_pretrain.errors import ConfigError, DataError

INDEX = "index.json"
# Characters of text tokenized per wanted token before checking we have enough: English
# WordPiece averages about 4.5 characters per token, so 8 almost always suffices at once.
CHARACTERS_PER_TOKEN_BUDGET = 8
# Tokens the prefix must give beyond those kept, so that the last kept token is surely not
# changed by where the prefix was cut (byte-level BPE may split trailing whitespace differently).
TOKEN_MARGIN = 4


def check_local_split(local: str, split: str | None) -> Path:
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


def check_tokenizer_matches(index_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Pre-tokenized shards are only meaningful with the tokenizer that made them. The split's
    index (local, or fetched from the remote) records it when we wrote the shards."""
    stamp = json.loads(index_path.read_text()).get(INDEX_KEY)
    if not stamp or stamp["format"] != "tokens":
        return
    if stamp["tokenizer"]["fingerprint"] != tokenizer_fingerprint(tokenizer):
        raise DataError(
            f"{index_path.parent} was pre-tokenized with another tokenizer (vocabulary size "
            f"{stamp['tokenizer']['size']}) than the recipe's {tokenizer.name_or_path!r} "
            f"({len(tokenizer)}); set tokenizer_name to the one used for conversion, or convert "
            "the data again with --tokenizer"
        )


def special_token_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text, read off its own output (some fast
    tokenizers add them in a post-processor that `build_inputs_with_special_tokens` ignores)."""
    probe = "probe"
    framed = tokenizer(probe, add_special_tokens=True, verbose=False)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False, verbose=False)["input_ids"]
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    raise DataError(
        f"tokenizer {tokenizer.name_or_path!r} changes a text's tokens when adding special "
        "tokens; it cannot be used for MLM samples here"
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
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        local: str | None = None,
        remote: str | None = None,
        split: str | None = None,
        streams: list[Stream] | None = None,
        **streaming_kwargs,
    ):
        self._built_in_pid = os.getpid()  # see release_shared_memory
        self.prefix, self.suffix = special_token_frame(tokenizer)
        special = len(self.prefix) + len(self.suffix)
        if max_seq_len <= special:
            raise DataError(
                f"max_seq_len={max_seq_len} leaves no room for text: tokenizer "
                f"{tokenizer.name_or_path!r} adds {special} special tokens; use at least "
                f"{special + 1}"
            )
        sources = streams or [Stream(local=local, remote=remote, split=split)]
        for stream in sources:
            if stream.remote is None:
                check_local_split(stream.local, stream.split)
        where = ", ".join(f"{stream.local}/{stream.split or ''}" for stream in sources)
        try:
            if streams:
                super().__init__(streams=streams, **streaming_kwargs)
            else:
                super().__init__(local=local, remote=remote, split=split, **streaming_kwargs)
        except (json.JSONDecodeError, KeyError) as error:
            raise DataError(
                f"MDS index under {where} cannot be read ({error}); convert again"
            ) from None
        for stream in sources:  # the index is local now, fetched if it was remote
            check_tokenizer_matches(Path(stream.local) / (stream.split or "") / INDEX, tokenizer)
        # Each shard stores text or input_ids (streams may mix the two; get_item reads either).
        for shard_id, shard in enumerate(self.shards):
            columns = set(shard.column_names)
            if not columns & {"input_ids", "text"}:
                stream = sources[self.stream_per_shard[shard_id]]
                raise DataError(
                    f"MDS data under {stream.local}/{stream.split or ''} has columns "
                    f"{sorted(columns)}; need 'text' or 'input_ids'"
                )
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.content_tokens = max_seq_len - special

    def stream_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """The stream (0 for a single dataset) each sample id comes from."""
        shards = np.searchsorted(self.sample_offset_per_shard, sample_ids, side="right") - 1
        return self.stream_per_shard[shards]

    def release_shared_memory(self) -> None:
        """Free streaming's shared memory for this dataset now, not at interpreter exit.

        Streaming closes a dataset's shared memory (its prefix registration, barrier, epoch
        counter, cache and shard tables, resume state) only when the interpreter exits, and
        every later dataset keeps open handles to the segments it probes while choosing its own
        prefix. Every dataset built in a long-lived process (an ablation's runs, a test session)
        therefore kept a dozen or more file descriptors and its /dev/shm segments, and enough of
        them exhaust the process's open-file limit. This closes every handle in this process to
        this dataset's segments (streaming's included) and unlinks those it created. Call it
        once the dataset is done with (the Trainer's close does, through `ReleaseDataMemory`).
        """
        self._release(search_process=True)

    def __del__(self) -> None:
        try:
            super().__del__()
            # Cheap here (no search of the process's objects): what the dataset itself holds.
            self._release(search_process=False)
        except Exception:  # at interpreter exit modules may be gone; streaming's atexit frees
            pass

    def _release(self, search_process: bool) -> None:
        # Only the process that built the dataset releases: a dataloader worker's copy must not
        # unlink what the main process still uses. Only once: the freed names may be taken by a
        # later dataset, whose segments a second release would unlink.
        if getattr(self, "_built_in_pid", None) != os.getpid():
            return
        if getattr(self, "_shared_memory_released", False) or not hasattr(self, "_locals_shm"):
            return
        self._shared_memory_released = True
        if search_process:  # what the dataset holds carries its prefix too
            memories = _process_shared_memory(shared_memory_name(self._shm_prefix_int, ""))
        else:
            memories = _held_shared_memory(self)
        for memory in memories:
            atexit.unregister(memory.cleanup)
            memory.cleanup()

    def get_item(self, sample_id: int, retry: int = 7) -> Sample:
        try:
            record = super().get_item(sample_id, retry)
        except (ValueError, KeyError, OSError, UnicodeDecodeError) as error:
            shard_id, _ = self.spanner[sample_id]
            raise DataError(
                f"sample {sample_id} cannot be decoded from shard {shard_id} "
                f"({type(error).__name__}: {error}); the shard is corrupt, convert the data again"
            ) from None
        if "input_ids" in record:
            content = record["input_ids"][: self.content_tokens].tolist()
        else:
            content = self._leading_tokens(record["text"])
        ids = np.asarray(self.prefix + content + self.suffix, dtype=np.int64)
        return Sample(ids, sample_id)

    def _leading_tokens(self, text: str) -> list[int]:
        return leading_tokens(self.tokenizer, text, self.content_tokens)


def _process_shared_memory(prefix: str) -> list[StreamingSharedMemory]:
    """Every streaming shared memory object alive in this process whose segment name starts
    with `prefix`, including those only streaming's exit handlers still reference (the
    resume state read back, other datasets' probes)."""
    found = []
    for candidate in gc.get_objects():
        # `type`, not `isinstance`: the latter reads `__class__`, which raises on a dead weak
        # proxy and warns on deprecated objects, and the process holds both kinds.
        if type(candidate) is StreamingSharedMemory:
            segment = getattr(candidate, "shm", None)
            if segment is not None and segment.name.lstrip("/").startswith(prefix):
                found.append(candidate)
    return found


def _held_shared_memory(dataset: StreamingDataset) -> list[StreamingSharedMemory]:
    """Streaming's shared memory objects held by `dataset` within three attribute levels (its
    shared arrays, scalars and barrier wrap theirs one or two levels down), found by type so a
    streaming release that adds one is still covered."""
    found, level = [], [dataset]
    for _ in range(3):
        values = [value for owner in level for value in getattr(owner, "__dict__", {}).values()]
        found += [value for value in values if type(value) is StreamingSharedMemory]
        level = [value for value in values if type(value) is not StreamingSharedMemory]
    return found


def leading_tokens(tokenizer: PreTrainedTokenizerBase, text: str, count: int) -> list[int]:
    """The first `count` tokens of `text` (no special tokens), tokenizing only as much text as
    needed.

    Text is cut just before a whitespace character (never inside a word), where WordPiece
    and byte-level BPE both start a new token, so tokens well before the cut are those of the
    whole text. The prefix must yield `TOKEN_MARGIN` tokens beyond those kept; if it does not,
    or holds no whitespace, the budget doubles, up to the whole text.
    """
    budget = count * CHARACTERS_PER_TOKEN_BUDGET
    while True:
        cut = _last_whitespace(text, budget) if len(text) > budget else len(text)
        if cut > 0:
            prefix = text[:cut]
            ids = tokenizer(prefix, add_special_tokens=False, verbose=False)["input_ids"]
            if cut == len(text) or len(ids) >= count + TOKEN_MARGIN:
                return ids[:count]
        budget *= 2


def _last_whitespace(text: str, end: int) -> int:
    """Index of the last whitespace character before `end`, or 0 if there is none."""
    for position in range(end - 1, 0, -1):
        if text[position].isspace():
            return position
    return 0


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
    pin_memory: bool = False,
) -> MLMDataLoader:
    """The loader for `dataset`, whose `batch_size` must equal the loader's: streaming assigns
    samples to dataloader workers by that batch size, and resuming relies on it. `pin_memory`
    (for a GPU) puts batches in page-locked memory, so their copies to the device really are
    asynchronous."""
    if dataset.batch_size != batch_size:
        raise ConfigError(
            f"the dataset was built with batch_size={dataset.batch_size} but the loader uses "
            f"{batch_size}; give MLMStreamingDataset the per-device batch size"
        )
    return MLMDataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collator,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
