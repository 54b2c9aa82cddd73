"""`mosaic-pretrain tokenizer`: a BERT-style tokenizer trained on your own text with Hugging Face
`tokenizers`, a drop-in for bert-base-uncased in recipes, `convert --tokenizer` and GLUE sweeps.

The text comes from the sources `convert` reads, streamed document by document into the trainer
(which keeps word counts, never the text). Every `HOLD_OUT_EVERY`-th document, up to
`HOLD_OUT_MAX`, is held back from training to measure the result: tokens per word and the share
of unknown tokens, also for bert-base-uncased on the same documents.

All three kinds split text into words as BERT does (its normalizer: lowercasing and accent
stripping as asked; its pre-tokenizer: whitespace and punctuation), and mark where words go on,
so whole-word masking finds the words of every kind: WordPiece (BERT's own) and BPE write a
word's later pieces with `##`, Unigram (whose pieces cannot carry that mark) starts each word
with `▁`, and learns its pieces from space-separated words (see `_untrained`). The special
tokens and the `[CLS] A [SEP] B [SEP]` post-processor are BERT's.

Vocabulary sizes are multiples of 64 (the model's embedding rows equal the tokenizer's). When
the corpus is too small for the size asked, the trainer returns fewer tokens; the vocabulary is
then padded with `[unusedN]` tokens to the next multiple of 64 (as BERT's own vocabulary carries
`[unused]` entries), and the manifest records the size asked, trained and padded.
"""

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tokenizer_trainers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from mosaic_pretrain.data.sources import (
    HF_PREFIX,
    SourceOptions,
    expand_local_sources,
    iter_hf_documents,
    iter_local_documents,
    local_files_record,
)
from mosaic_pretrain.data.tokenizer import BERT_MODEL_MAX_LENGTH, load_tokenizer
from mosaic_pretrain.errors import ConfigError, DataError
from mosaic_pretrain.model.configuration import VOCAB_MULTIPLE

MANIFEST = "tokenizer_training.json"
KINDS = ("wordpiece", "bpe", "unigram")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"  # WordPiece and BPE: a piece that continues a word
WORD_START = "\u2581"  # Unigram: a piece that starts a word ("▁")
HOLD_OUT_EVERY = 50
HOLD_OUT_MAX = 1000
COMPARED_WITH = "bert-base-uncased"


@dataclass(frozen=True)
class TokenizerOptions:
    """Everything that determines a trained tokenizer; recorded in its manifest.

    sources: local files/directories, or one `hf:NAME` dataset (its `hf_split`).
    kind: wordpiece (BERT's), bpe or unigram.
    vocab_size: a multiple of 64, special tokens included.
    lowercase / strip_accents: BERT's normalizer; strip_accents None follows lowercase.
    min_frequency: a piece must occur this often to be learned (wordpiece and bpe).
    max_documents: read at most this many documents (held-back ones included).
    """

    sources: tuple[str, ...]
    kind: str = "wordpiece"
    vocab_size: int = 30528
    lowercase: bool = True
    strip_accents: bool | None = None
    min_frequency: int = 2
    max_documents: int | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    source_options: SourceOptions = field(default_factory=SourceOptions)

    def validate(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"--type {self.kind!r} is unknown; choose one of {', '.join(KINDS)}")
        if self.vocab_size < 2 * VOCAB_MULTIPLE or self.vocab_size % VOCAB_MULTIPLE:
            rounded = max(2, -(-self.vocab_size // VOCAB_MULTIPLE)) * VOCAB_MULTIPLE
            problems.append(
                f"--vocab-size must be a multiple of {VOCAB_MULTIPLE} of at least "
                f"{2 * VOCAB_MULTIPLE} (the model's embedding rows equal it), e.g. {rounded}"
            )
        if self.min_frequency < 1:
            problems.append(f"--min-frequency must be at least 1, got {self.min_frequency}")
        if self.max_documents is not None and self.max_documents < 1:
            problems.append(f"--max-documents must be positive, got {self.max_documents}")
        is_hf = any(source.startswith(HF_PREFIX) for source in self.sources)
        if is_hf and len(self.sources) != 1:
            problems.append("a Hugging Face source is one hf:NAME, not mixed with other sources")
        if problems:
            raise ConfigError("; ".join(problems), problems)

    @property
    def is_hf(self) -> bool:
        return self.sources[0].startswith(HF_PREFIX)

    def documents(self) -> Iterator[str]:
        if self.is_hf:
            name = self.sources[0][len(HF_PREFIX) :]
            return iter_hf_documents(name, self.hf_config, self.hf_split, self.source_options)
        return iter_local_documents(expand_local_sources(list(self.sources)), self.source_options)

    def as_record(self) -> dict:
        record = json.loads(json.dumps(asdict(self)))
        if not self.is_hf:
            record["sources"] = [str(Path(source).resolve()) for source in self.sources]
            record["source_files"] = local_files_record(expand_local_sources(list(self.sources)))
        return record


def _strips_accents(options: TokenizerOptions) -> bool:
    """BERT's rule: accents go with lowercasing unless said otherwise."""
    return options.lowercase if options.strip_accents is None else options.strip_accents


def _normalizer(options: TokenizerOptions) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=_strips_accents(options),
        lowercase=options.lowercase,
    )


def _untrained(options: TokenizerOptions) -> tuple[Tokenizer, object]:
    """A tokenizer with BERT's normalizer and pre-tokenizer, and its trainer."""
    special = list(SPECIAL_TOKENS)
    common = dict(vocab_size=options.vocab_size, special_tokens=special, show_progress=False)
    if options.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        trainer = tokenizer_trainers.WordPieceTrainer(
            **common, min_frequency=options.min_frequency, continuing_subword_prefix=CONTINUATION
        )
        tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION)
    elif options.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
        trainer = tokenizer_trainers.BpeTrainer(
            **common, min_frequency=options.min_frequency, continuing_subword_prefix=CONTINUATION
        )
        tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION)
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = tokenizer_trainers.UnigramTrainer(**common, unk_token="[UNK]")
        tokenizer.decoder = decoders.Metaspace(replacement=WORD_START, prepend_scheme="always")
    tokenizer.normalizer = _normalizer(options)
    if options.kind == "unigram":
        # Trained on space-separated words: split at punctuation first, the trainer seeds too
        # few whole-word pieces (1.47 tokens per word on the shipped corpus at 8,192, against
        # 1.25 this way). `_tokenizing_pipeline` then puts BERT's words back.
        tokenizer.pre_tokenizer = _word_start_marks()
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer, trainer


def _word_start_marks() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always")


def _tokenizing_pipeline(tokenizer: Tokenizer, kind: str) -> None:
    """BERT's words for every kind; Unigram's pieces carry no mark of going on with a word, so
    each of its words starts with one (`▁`) instead."""
    if kind == "unigram":
        bert_words = pre_tokenizers.BertPreTokenizer()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([bert_words, _word_start_marks()])


def _pad_vocabulary(tokenizer: Tokenizer) -> tuple[Tokenizer, int]:
    """The tokenizer with `[unusedN]` entries up to a multiple of 64; returns how many."""
    size = tokenizer.get_vocab_size()
    missing = -size % VOCAB_MULTIPLE
    if not missing:
        return tokenizer, 0
    state = json.loads(tokenizer.to_str())
    model = state["model"]
    names = [f"[unused{number}]" for number in range(missing)]
    if model["type"] == "Unigram":
        lowest = min(score for _, score in model["vocab"])
        model["vocab"].extend([name, lowest - 10.0] for name in names)
    else:
        for name in names:
            model["vocab"][name] = len(model["vocab"])
    return Tokenizer.from_str(json.dumps(state)), missing


def _post_processor(tokenizer: Tokenizer) -> processors.TemplateProcessing:
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )


def _wrapped(tokenizer: Tokenizer, options: TokenizerOptions) -> PreTrainedTokenizerFast:
    """transformers' fast tokenizer around it: BertTokenizerFast for WordPiece (also writes
    vocab.txt), the generic class otherwise; BERT's special tokens either way."""
    special = dict(
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", model_max_length=BERT_MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=True,  # "it ." decodes to "it.", as BERT's does
    )  # fmt: skip
    if options.kind == "wordpiece":
        # BertTokenizerFast rewrites the normalizer to its own casing arguments: pass ours.
        return BertTokenizerFast(
            tokenizer_object=tokenizer,
            do_lower_case=options.lowercase,
            strip_accents=_strips_accents(options),
            **special,
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)


@dataclass
class HeldOut:
    """Documents held back from training, to measure a tokenizer on text it did not see."""

    texts: list[str] = field(default_factory=list)

    def measure(self, tokenizer: PreTrainedTokenizerFast) -> dict:
        backend = tokenizer.backend_tokenizer
        words = tokens = unknown = 0
        unk = tokenizer.unk_token_id
        for text in self.texts:
            normalized = backend.normalizer.normalize_str(text)
            words += len(backend.pre_tokenizer.pre_tokenize_str(normalized))
            ids = backend.encode(text, add_special_tokens=False).ids
            tokens += len(ids)
            unknown += sum(1 for token in ids if token == unk)
        return {
            "documents": len(self.texts),
            "words": words,
            "tokens": tokens,
            "tokens_per_word": tokens / words if words else None,
            "unknown_share": unknown / tokens if tokens else None,
        }


def _training_stream(
    options: TokenizerOptions, held_out: HeldOut, counts: dict, progress: bool
) -> Iterator[str]:
    """The training documents, with every HOLD_OUT_EVERY-th (up to HOLD_OUT_MAX) held back."""
    from tqdm import tqdm

    bar = tqdm(desc="reading", unit=" docs", disable=not progress)
    started = time.perf_counter()
    try:
        for number, text in enumerate(options.documents(), start=1):
            if options.max_documents is not None and number > options.max_documents:
                break
            counts["documents"] += 1
            counts["bytes"] += len(text.encode())
            bar.update(1)
            if number % 256 == 0:
                seconds = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{counts['bytes'] / seconds / 2**20:,.1f} MB/s")
            if number % HOLD_OUT_EVERY == 0 and len(held_out.texts) < HOLD_OUT_MAX:
                held_out.texts.append(text)
                continue
            counts["trained_documents"] += 1
            yield text
    finally:
        bar.close()


def train_tokenizer(
    options: TokenizerOptions,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train, write `out` (replacing an existing one only with `overwrite`, and only once the
    new one is complete) and return the manifest."""
    options.validate()
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; choose another --out, or pass --overwrite")
    if out.exists() and not (out / MANIFEST).is_file():
        raise DataError(
            f"{out} is not a tokenizer written by `mosaic-pretrain tokenizer` (no {MANIFEST}); "
            "--overwrite replaces only such a directory: choose another --out"
        )
    record = options.as_record()  # a missing source fails here, before any work
    tokenizer, trainer = _untrained(options)
    held_out, counts = HeldOut(), {"documents": 0, "trained_documents": 0, "bytes": 0}
    started = time.perf_counter()
    tokenizer.train_from_iterator(_training_stream(options, held_out, counts, progress), trainer)
    seconds = time.perf_counter() - started
    if counts["trained_documents"] == 0:
        raise DataError(f"no documents to train on in {', '.join(options.sources)}")
    trained_size = tokenizer.get_vocab_size()
    _tokenizing_pipeline(tokenizer, options.kind)
    tokenizer, padded = _pad_vocabulary(tokenizer)
    tokenizer.post_processor = _post_processor(tokenizer)
    wrapped = _wrapped(tokenizer, options)
    measured = held_out.measure(wrapped) if held_out.texts else None
    reference = held_out.measure(load_tokenizer(COMPARED_WITH)) if held_out.texts else None
    manifest = {
        "options": record,
        "vocabulary": {
            "asked": options.vocab_size,
            "trained": trained_size,
            "padded_with_unused": padded,
            "size": len(wrapped),
        },
        "read": {
            **counts,
            "seconds": seconds,
            "documents_per_second": counts["documents"] / seconds,
            "megabytes_per_second": counts["bytes"] / seconds / 2**20,
        },
        "held_out": measured,
        COMPARED_WITH: reference,
    }
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    wrapped.save_pretrained(partial)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    previous = out.with_name(f".{out.name}.previous")
    if out.exists():  # set aside, not deleted, until the new one is in place
        if previous.exists():
            shutil.rmtree(previous)
        out.rename(previous)
    partial.rename(out)
    if previous.exists():
        shutil.rmtree(previous)
    log(summary(manifest, out))
    return manifest


def summary(manifest: dict, out: Path) -> str:
    vocabulary, read, held = manifest["vocabulary"], manifest["read"], manifest["held_out"]
    lines = [
        f"{out}: {manifest['options']['kind']} tokenizer, {vocabulary['size']:,} tokens"
        + (
            f" ({vocabulary['trained']:,} trained, {vocabulary['padded_with_unused']} [unused] "
            f"added; the corpus is too small for {vocabulary['asked']:,})"
            if vocabulary["padded_with_unused"]
            else ""
        ),
        f"trained on {read['documents']:,} documents ({read['bytes'] / 2**20:,.1f} MB, "
        f"{read['documents'] - read['trained_documents']:,} of them held back) in "
        f"{read['seconds']:.1f} s: {read['documents_per_second']:,.0f} documents/s, "
        f"{read['megabytes_per_second']:,.2f} MB/s",
    ]
    if held:
        reference = manifest[COMPARED_WITH]
        lines.append(
            f"on {held['documents']:,} held-back documents: {held['tokens_per_word']:.3f} tokens "
            f"per word, {held['unknown_share']:.4%} unknown ({COMPARED_WITH}: "
            f"{reference['tokens_per_word']:.3f}, {reference['unknown_share']:.4%})"
        )
    return "\n".join(lines)
