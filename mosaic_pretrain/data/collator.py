"""MLM collation: pad (or pack) tokenized samples and mask them, vectorized with numpy.

Masking follows BERT: each real, non-special token is chosen with probability `mlm_probability`;
a chosen token becomes [MASK] 80% of the time, a random non-special token 10%, and stays 10%.
Labels hold the original id at chosen tokens and -100 elsewhere.

With `whole_word`, words are chosen instead of tokens: each word (a piece that starts a word,
with the pieces that go on with it, as the tokenizer marks them) is chosen with probability
`mlm_probability`, so the expected share of masked tokens is unchanged, and the 80/10/10 choice
is made once per word for all its pieces. A word is never partly masked.

Randomness is a function of the seed and the batch's sample indices, not of a generator's
history, so a resumed run masks exactly as the uninterrupted one did, whichever dataloader
worker collates the batch.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.data.tokenizer import word_starts
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model.padding import IGNORE_INDEX

MASK_FRACTION = 0.8  # of chosen tokens, replaced by [MASK]
RANDOM_FRACTION = 0.1  # of chosen tokens, replaced by a random token; the rest stay as they are


@dataclass(frozen=True)
class Sample:
    """One dataset item: token ids with special tokens added, at most `max_seq_len` long."""

    input_ids: np.ndarray  # (length,) int
    index: int  # the sample's index in its dataset, which seeds its masking


def pack_rows(lengths: Sequence[int], max_seq_len: int) -> list[list[int]]:
    """First-fit decreasing: sample numbers grouped into rows of at most `max_seq_len` tokens."""
    rows: list[list[int]] = []
    free: list[int] = []
    for sample in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for row, room in enumerate(free):
            if lengths[sample] <= room:
                rows[row].append(sample)
                free[row] -= lengths[sample]
                break
        else:
            rows.append([sample])
            free.append(max_seq_len - lengths[sample])
    return [sorted(row) for row in rows]


class MLMCollator:
    """Turns a list of `Sample`s into a model batch with `input_ids`, `attention_mask`,
    `token_type_ids` and `labels`.

    With `packing`, samples share rows (first-fit decreasing, each row at most `max_seq_len`)
    and `attention_mask` numbers the documents of a row 1, 2, ... so the model keeps them apart;
    the batch then has at most as many rows as samples, and exactly the same tokens.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float,
        max_seq_len: int,
        seed: int = 0,
        packing: bool = False,
        whole_word: bool = False,
    ):
        if not 0.0 <= mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability must be in [0, 1), got {mlm_probability}")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has no mask or pad token, which MLM needs"
            )
        self.mlm_probability = mlm_probability
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.packing = packing
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        self.replacement_ids = np.setdiff1d(np.arange(len(tokenizer)), self.special_ids)
        self.word_starts = word_starts(tokenizer) if whole_word else None

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask, rows = self._layout(samples)
        rng = np.random.default_rng([self.seed, *(sample.index for sample in samples)])
        input_ids, labels = self.mask(input_ids, attention_mask != 0, rng, attention_mask)
        in_row_order = [samples[sample].index for row in rows for sample in row]
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.zeros(input_ids.shape, dtype=torch.long),
            "labels": torch.from_numpy(labels),
            # One entry per document (rows may pack several), in row order, so that a run of
            # rows owns a run of entries: what resuming and microbatch weights count.
            "sample_index": torch.tensor(in_row_order, dtype=torch.long),
        }

    def _layout(self, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """Ids and attention mask padded to (rows, max_seq_len), and the sample numbers in each
        row; rows = samples unless packing."""
        if not samples:
            raise ValueError("cannot collate an empty batch")
        lengths = [len(sample.input_ids) for sample in samples]
        if max(lengths) > self.max_seq_len:
            raise ValueError(f"a sample of {max(lengths)} tokens exceeds max_seq_len")
        if self.packing:
            rows = pack_rows(lengths, self.max_seq_len)
        else:
            rows = [[i] for i in range(len(samples))]
        input_ids = np.full((len(rows), self.max_seq_len), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), self.max_seq_len), dtype=np.int64)
        for row_number, row in enumerate(rows):
            start = 0
            for document_number, sample in enumerate(row, start=1):
                end = start + lengths[sample]
                input_ids[row_number, start:end] = samples[sample].input_ids
                attention_mask[row_number, start:end] = document_number
                start = end
        return input_ids, attention_mask, rows

    def mask(
        self,
        input_ids: np.ndarray,
        is_real: np.ndarray,
        rng: np.random.Generator,
        documents: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BERT's 80/10/10 masking of real, non-special tokens; returns (inputs, labels).
        `documents` numbers each token's document in its row (a word never crosses one)."""
        can_mask = is_real & ~np.isin(input_ids, self.special_ids)
        if self.word_starts is None:
            chosen = can_mask & (rng.random(input_ids.shape) < self.mlm_probability)
            action = rng.random(input_ids.shape)
        else:
            chosen, action = self._by_word(input_ids, can_mask, rng, documents)
        labels = np.where(chosen, input_ids, IGNORE_INDEX)
        to_mask = chosen & (action < MASK_FRACTION)
        to_random = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
        masked_ids = input_ids.copy()
        masked_ids[to_mask] = self.mask_id
        random_tokens = rng.integers(0, len(self.replacement_ids), size=int(to_random.sum()))
        masked_ids[to_random] = self.replacement_ids[random_tokens]
        return masked_ids, labels

    def _by_word(
        self,
        input_ids: np.ndarray,
        can_mask: np.ndarray,
        rng: np.random.Generator,
        documents: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chosen, action) per token with one draw of each per word, shared by its pieces."""
        follows_maskable = np.zeros_like(can_mask)
        follows_maskable[:, 1:] = can_mask[:, :-1]
        if documents is not None:  # the first token of a packed document follows no word
            follows_maskable[:, 1:] &= documents[:, 1:] == documents[:, :-1]
        # a word starts at a start piece, or at any piece after an unmaskable token
        starts = can_mask & (self.word_starts[input_ids] | ~follows_maskable)
        word_of_token = np.cumsum(starts.ravel()).reshape(starts.shape) - 1
        words = int(starts.sum())
        word_chosen = rng.random(words) < self.mlm_probability
        word_action = rng.random(words)
        safe = np.where(can_mask, word_of_token, 0)  # unmaskable tokens take a dummy word
        chosen = can_mask & word_chosen[safe] if words else np.zeros_like(can_mask)
        action = word_action[safe] if words else np.ones(can_mask.shape)
        return chosen, action
