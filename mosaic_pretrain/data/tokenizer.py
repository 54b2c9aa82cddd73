"""Tokenizers by name, offline first, and the model vocabulary size derived from them.

`bert-base-uncased` is shipped with the package, so the default recipes never touch the hub. Any
other name is a local directory (`tokenizer.save_pretrained(DIR)`) or a Hugging Face hub name.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from mosaic_pretrain.errors import DataError, first_line
from mosaic_pretrain.model.configuration import MosaicBertConfig, round_vocab_size

ASSETS = Path(__file__).parent / "assets"
DEFAULT_CORPUS = ASSETS / "public_domain_en.jsonl.xz"
BUNDLED_VOCABULARIES = {"bert-base-uncased": ASSETS / "bert-base-uncased-vocab.txt"}
# bert-base-uncased was trained with 512 positions; our model has no such limit, but tokenizers
# warn past model_max_length, so keep the published value.
BERT_MODEL_MAX_LENGTH = 512


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a local directory, the shipped vocabulary or the hub, in that order."""
    if Path(name_or_path).is_dir():
        return _from_pretrained(name_or_path, local=True)
    if name_or_path.startswith((".", "/", "~")):
        raise DataError(
            f"tokenizer {name_or_path!r} does not exist; fix the path, or train one there with "
            f"`mosaic-pretrain tokenizer --source TEXT --out {name_or_path}`"
        )
    if name_or_path in BUNDLED_VOCABULARIES:
        return BertTokenizerFast(
            vocab_file=str(BUNDLED_VOCABULARIES[name_or_path]),
            do_lower_case=True,
            model_max_length=BERT_MODEL_MAX_LENGTH,
            name_or_path=name_or_path,
        )
    return _from_pretrained(name_or_path, local=False)


def _from_pretrained(name_or_path: str, local: bool) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except (OSError, ValueError) as error:
        where = "the directory" if local else "the Hugging Face hub name"
        raise DataError(
            f"tokenizer {name_or_path!r} cannot be loaded from {where} ({first_line(error)}); "
            "without hub access, save it on a connected machine with "
            "`AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR)` and set tokenizer_name "
            f"to DIR (shipped offline: {', '.join(BUNDLED_VOCABULARIES)})"
        ) from None
    if not tokenizer.is_fast:
        raise DataError(f"tokenizer {name_or_path!r} has no fast (Rust) version, which we need")
    return tokenizer


def model_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """The one place the model's vocabulary is derived: the tokenizer's size rounded up to 64."""
    return round_vocab_size(len(tokenizer))


def model_config_for(
    tokenizer: PreTrainedTokenizerBase, preset: str = "base", **overrides
) -> MosaicBertConfig:
    """A MosaicBERT config sized for `tokenizer`, which it records (saved in config.json); a
    `vocab_size` among the overrides replaces the tokenizer's rounded size."""
    sized = {
        "vocab_size": model_vocab_size(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "tokenizer_name": tokenizer.name_or_path,
        "tokenizer_vocab_size": len(tokenizer),
    }
    return MosaicBertConfig.from_preset(preset, **{**sized, **overrides})


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the whole tokenization pipeline (normalizer, pre-tokenizer, vocabulary, special
    tokens): equal for the same tokenizer however it was loaded, different for a cased and an
    uncased tokenizer sharing one vocabulary."""
    pipeline = json.loads(tokenizer.backend_tokenizer.to_str())
    return hashlib.sha256(json.dumps(pipeline, sort_keys=True).encode()).hexdigest()[:16]


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids never masked or used as random replacements: [CLS], [SEP], [PAD], [MASK], [UNK]..."""
    return sorted(set(tokenizer.all_special_ids))


# How a tokenizer's pieces say where a word starts: marks read off its serialized pipeline.
CONTINUATION_MODELS = ("WordPiece", "BPE")  # `continuing_subword_prefix`: pieces after the first
WORD_START_PRE_TOKENIZERS = {"Metaspace": "replacement", "ByteLevel": None}  # a start mark
BYTE_LEVEL_START = "\u0120"  # "Ġ", byte-level BPE's space


def _pre_tokenizers(state: dict | None) -> list[dict]:
    if not state:
        return []
    if state.get("type") == "Sequence":
        return [inner for part in state["pretokenizers"] for inner in _pre_tokenizers(part)]
    return [state]


def word_starts(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """For each token id, whether the token starts a word (special tokens do): from `##`
    continuation pieces (WordPiece, BPE with a continuing prefix) or a start mark on the first
    piece (`▁` of Metaspace, `Ġ` of byte-level BPE). Whole-word masking groups a start with the
    pieces that follow it."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    vocabulary = tokenizer.get_vocab()
    starts = np.ones(max(vocabulary.values()) + 1, dtype=bool)
    prefix = (
        model.get("continuing_subword_prefix") if model["type"] in CONTINUATION_MODELS else None
    )
    marks = [
        part.get("replacement") if part["type"] == "Metaspace" else BYTE_LEVEL_START
        for part in _pre_tokenizers(state.get("pre_tokenizer"))
        if part["type"] in WORD_START_PRE_TOKENIZERS
    ]
    if prefix:
        for token, index in vocabulary.items():
            starts[index] = not token.startswith(prefix)
    elif marks:
        for token, index in vocabulary.items():
            starts[index] = token.startswith(marks[0])
    else:
        raise DataError(
            f"tokenizer {tokenizer.name_or_path!r} marks neither the pieces that continue a word "
            "(##) nor those that start one (▁, Ġ), so whole-word masking cannot find its words; "
            "set mlm_whole_word: false, or train one with `mosaic-pretrain tokenizer`"
        )
    starts[sorted(set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder))] = True
    _check_word_starts(tokenizer, starts)
    return starts


# Words, punctuation and a line break: where marks and a tokenizer's own split could disagree.
WORD_PROBE = (
    "The tortfeasor's estoppel, said Ishmael, was unbelievably final.\nAnother line (here)."
)


def _check_word_starts(tokenizer: PreTrainedTokenizerBase, starts: np.ndarray) -> None:
    """The marks must give the words the tokenizer itself splits a text into; a pipeline whose
    marks say otherwise (a `▁` on the first word only, byte-level punctuation) is refused."""
    encoding = tokenizer(WORD_PROBE, add_special_tokens=False)
    ids, words = encoding["input_ids"], encoding.word_ids()
    special = set(tokenizer.all_special_ids)
    for position, (token, word) in enumerate(zip(ids, words, strict=True)):
        if token in special or (position and ids[position - 1] in special):
            continue  # unmaskable, and what follows one starts a word anyway
        opens = position == 0 or words[position - 1] != word
        if bool(starts[token]) != opens:
            piece = tokenizer.convert_ids_to_tokens(token)
            raise DataError(
                f"tokenizer {tokenizer.name_or_path!r} marks its word pieces unlike its own word "
                f"split ({piece!r} in {WORD_PROBE!r}), so whole-word masking would mask other "
                "spans than words; set mlm_whole_word: false, or train one with "
                "`mosaic-pretrain tokenizer`"
            )
