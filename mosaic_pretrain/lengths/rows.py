"""Rows of each length from the same documents, masked the same way at every length.

Only documents with at least as many tokens as the longest row holds are used, so every length
scores the same documents: the row of length L is the tokenizer's opening special tokens
([CLS]), the document's first L - 2 tokens, and its closing ones ([SEP]). Longer rows add context
after the same start; they never swap in other text.

Masking is BERT's (15% of the non-special tokens; of those 80% [MASK], 10% a random token, 10%
kept), drawn once per document for its longest row with a seed of (`seed`, document number): a
position of the shared prefix is masked alike at every length, so a change of loss with length
comes from the context, not from other masked tokens.
"""

from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.data.collator import MASK_FRACTION, RANDOM_FRACTION, MLMCollator
from mosaic_pretrain.data.dataset import special_token_frame
from mosaic_pretrain.errors import ConfigError, DataError
from mosaic_pretrain.model.padding import IGNORE_INDEX

MLM_PROBABILITY = 0.15  # BERT's, and the eval loaders' of our recipes


@dataclass(frozen=True)
class LengthRows:
    """The rows of one length: masked inputs and labels (original id where masked, else -100)."""

    length: int
    input_ids: torch.Tensor  # (N, L)
    labels: torch.Tensor  # (N, L)

    @property
    def masked_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class Selection:
    """The documents long enough for the longest row: their leading tokens, and how many of how
    many read were long enough."""

    contents: list[list[int]]
    read: int


def parse_lengths(text: str) -> list[int]:
    """'128,256,512' -> [128, 256, 512]: positive whole numbers, increasing, at least one."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(
            f"--lengths {text!r} must be positive whole numbers separated by commas, "
            "e.g. --lengths 128,256,512"
        )
    lengths = [int(part) for part in parts]
    if lengths != sorted(set(lengths)):
        raise ConfigError(
            f"--lengths {text!r} must increase without repeats, e.g. "
            f"--lengths {','.join(map(str, sorted(set(lengths))))}"
        )
    return lengths


def content_tokens(tokenizer: PreTrainedTokenizerBase, length: int) -> int:
    """Document tokens in a row of `length`: what the special tokens leave."""
    prefix, suffix = special_token_frame(tokenizer)
    room = length - len(prefix) - len(suffix)
    if room < 1:
        raise ConfigError(
            f"--lengths {length} leaves no room for text: tokenizer {tokenizer.name_or_path!r} "
            f"adds {len(prefix) + len(suffix)} special tokens to a row"
        )
    return room


def select_documents(
    documents: Generator[list[int], None, None],
    needed: int,
    lengths: list[int],
    min_documents: int,
    max_documents: int,
    described: str,
) -> Selection:
    """The first `max_documents` documents with `needed` tokens; at least `min_documents`."""
    long_enough: list[list[int]] = []
    counts: list[int] = []  # the tokens of every document read (at most `needed`)
    with closing(documents):  # frees what the source holds (an MDS dataset's shared memory)
        for tokens in documents:
            counts.append(len(tokens))
            if len(tokens) >= needed:
                long_enough.append(tokens)
                if len(long_enough) == max_documents:
                    break
    if len(long_enough) < min_documents:
        raise DataError(_too_few(counts, needed, lengths, min_documents, described))
    return Selection(long_enough, len(counts))


def _too_few(
    counts: list[int],
    needed: int,
    lengths: list[int],
    min_documents: int,
    described: str,
) -> str:
    frame = lengths[-1] - needed  # the special tokens of a row
    longest_first = sorted(counts, reverse=True)
    hint = "use shorter --lengths"
    if len(longest_first) >= min_documents:  # the longest row that many documents fill
        hint = f"use --lengths up to {longest_first[min_documents - 1] + frame}"
    return (
        f"only {sum(c >= needed for c in counts)} of the {len(counts)} documents of {described} "
        f"have the {needed} tokens a row of {lengths[-1]} needs (the longest read has "
        f"{max(counts, default=0)}), fewer than --min-documents {min_documents}; {hint}, "
        "other --data, or a lower --min-documents"
    )


def form_rows(
    contents: list[list[int]],
    lengths: list[int],
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    longest: int,
) -> list[LengthRows]:
    """The masked rows of each of `lengths` from the selected documents' leading tokens, masked
    by draws made for rows of `longest` (the longest length asked for, whether or not this model
    runs it, so models of one tokenizer see the same masks)."""
    prefix, suffix = special_token_frame(tokenizer)
    collator = MLMCollator(tokenizer, MLM_PROBABILITY, longest)  # its vocabulary rules
    draws = [
        _draws(seed, number, longest, len(collator.replacement_ids))
        for number in range(len(contents))
    ]
    made = []
    for length in lengths:
        room = length - len(prefix) - len(suffix)
        ids = np.array([prefix + tokens[:room] + suffix for tokens in contents], dtype=np.int64)
        chance, action, replacement = (
            np.stack([draw[kind][:length] for draw in draws]) for kind in range(3)
        )
        can_mask = ~np.isin(ids, collator.special_ids)
        chosen = can_mask & (chance < MLM_PROBABILITY)
        labels = np.where(chosen, ids, IGNORE_INDEX)
        masked = ids.copy()
        masked[chosen & (action < MASK_FRACTION)] = collator.mask_id
        to_random = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
        masked[to_random] = collator.replacement_ids[replacement[to_random]]
        made.append(LengthRows(length, torch.from_numpy(masked), torch.from_numpy(labels)))
    return made


def _draws(seed: int, document: int, longest: int, replacements: int) -> tuple[np.ndarray, ...]:
    """One document's draws per position of its longest row: chosen?, which action, which
    random token."""
    rng = np.random.default_rng([seed, document])
    return rng.random(longest), rng.random(longest), rng.integers(0, replacements, longest)
