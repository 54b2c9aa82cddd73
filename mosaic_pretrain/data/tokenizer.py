"""Tokenizers by name, offline first, and the model vocabulary size derived from them.

`bert-base-uncased` is shipped with the package, so the default recipes never touch the hub. Any
other name is a local directory (`tokenizer.save_pretrained(DIR)`) or a Hugging Face hub name.
"""

import hashlib
import json
from pathlib import Path

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
