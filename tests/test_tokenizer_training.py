"""`mosaic-pretrain tokenizer`: a tokenizer trained on local text, usable wherever a tokenizer
name is, with a manifest; and its bad inputs."""

import json

import pytest

from mosaic_pretrain.cli import main
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.sources import SourceOptions
from mosaic_pretrain.data.tokenizer import load_tokenizer, model_vocab_size
from mosaic_pretrain.data.tokenizer_training import (
    HOLD_OUT_EVERY,
    MANIFEST,
    TokenizerOptions,
    train_tokenizer,
)
from mosaic_pretrain.errors import ConfigError, DataError

LEGAL = [
    "estoppel", "tortfeasor", "plaintiff", "defendant", "appellate", "jurisdiction", "statute",
    "negligence", "liability", "injunction", "indemnity", "covenant", "easement", "fiduciary",
]  # fmt: skip
SYLLABLES = ["ka", "ro", "mi", "tse", "lun", "dor", "pha", "qui", "vex", "zan", "bel", "gro"]


def word(number: int) -> str:
    """One of 1,728 made-up words of three syllables: more pieces than a tiny vocabulary holds."""
    return "".join(SYLLABLES[(number // 12**k) % 12] for k in range(3))


@pytest.fixture
def corpus(tmp_path):
    """A small legal-flavoured corpus: 400 documents of 30 words, as .jsonl and .txt."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    lines = []
    for number in range(400):
        words = [LEGAL[(number + k) % len(LEGAL)] for k in range(10)]
        words += [word(number * 31 + k * 17) for k in range(20)]
        lines.append(json.dumps({"body": " ".join(words) + f". Case {number}."}))
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "notes.txt").write_text("The Court held that the covenant ran with the land.\n")
    return folder


def options(corpus, **changes) -> TokenizerOptions:
    fields = dict(
        sources=(str(corpus),),
        vocab_size=256,
        source_options=SourceOptions(text_field="body"),
    )
    return TokenizerOptions(**{**fields, **changes})


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_each_kind_trains_a_bert_style_tokenizer(tmp_path, corpus, kind):
    chosen = options(corpus, kind=kind, vocab_size=512)
    manifest = train_tokenizer(chosen, tmp_path / kind, progress=False)
    tokenizer = load_tokenizer(str(tmp_path / kind))  # as tokenizer_name in a recipe loads it
    assert len(tokenizer) == manifest["vocabulary"]["size"] == 512
    assert model_vocab_size(tokenizer) == len(tokenizer)  # the model's rows equal its tokens
    encoded = tokenizer("estoppel bars it", "the tortfeasor pays")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    assert encoded["token_type_ids"][-1] == 1  # the second segment is type 1, as in BERT
    for special in ("[PAD]", "[UNK]", "[MASK]"):
        assert (
            tokenizer.convert_tokens_to_ids(special) != tokenizer.unk_token_id or special == "[UNK]"
        )
    assert tokenizer.decode(
        tokenizer("Estoppel bars it.")["input_ids"], skip_special_tokens=True
    ) == ("estoppel bars it.")
    read = manifest["read"]
    assert read["documents"] == 401 and read["trained_documents"] == 401 - 401 // HOLD_OUT_EVERY
    held = manifest["held_out"]
    assert held["documents"] == 401 // HOLD_OUT_EVERY and held["unknown_share"] == 0.0
    assert manifest["bert-base-uncased"]["documents"] == held["documents"]
    # trained on this text, WordPiece and BPE need fewer tokens per word for it than
    # bert-base-uncased; Unigram at this tiny size (512) needs a few more (3.28 against 2.86)
    reference = manifest["bert-base-uncased"]["tokens_per_word"]
    if kind == "unigram":
        assert 1.0 < held["tokens_per_word"] < 1.2 * reference
    else:
        assert 1.0 < held["tokens_per_word"] < reference
    on_disk = json.loads((tmp_path / kind / MANIFEST).read_text())
    assert on_disk["options"]["kind"] == kind and on_disk["options"]["source_files"]


def test_cased_keeps_case_and_uncased_lowers_it(tmp_path, corpus):
    cased = options(corpus, lowercase=False)
    train_tokenizer(cased, tmp_path / "cased", progress=False)
    train_tokenizer(options(corpus), tmp_path / "uncased", progress=False)
    assert load_tokenizer(str(tmp_path / "cased")).tokenize("Court")[0].startswith("C")
    assert load_tokenizer(str(tmp_path / "uncased")).tokenize("Court")[0].startswith("c")
    strip = load_tokenizer(str(tmp_path / "uncased")).backend_tokenizer.normalizer
    assert strip.normalize_str("Café") == "cafe"  # uncased strips accents, as BERT's does
    keep = load_tokenizer(str(tmp_path / "cased")).backend_tokenizer.normalizer
    assert keep.normalize_str("Café") == "Café"


def test_a_corpus_too_small_for_the_size_is_padded_with_unused_tokens(tmp_path, corpus):
    manifest = train_tokenizer(options(corpus, vocab_size=8192), tmp_path / "big", progress=False)
    vocabulary = manifest["vocabulary"]
    assert vocabulary["asked"] == 8192 and vocabulary["trained"] < 8192
    assert vocabulary["size"] % 64 == 0 and vocabulary["size"] - vocabulary["trained"] < 64
    assert vocabulary["padded_with_unused"] == vocabulary["size"] - vocabulary["trained"]
    tokenizer = load_tokenizer(str(tmp_path / "big"))
    assert len(tokenizer) == vocabulary["size"]
    assert tokenizer.convert_tokens_to_ids("[unused0]") == vocabulary["trained"]


def test_the_output_converts_a_corpus_as_convert_tokenizer(tmp_path, corpus):
    train_tokenizer(options(corpus), tmp_path / "tok", progress=False)
    convert_options = ConvertOptions(
        sources=(str(corpus / "cases.jsonl"),),
        output_format="tokens",
        tokenizer_name=str(tmp_path / "tok"),
        val_fraction=0.1,
        source_options=SourceOptions(text_field="body"),
    )
    summaries = convert(convert_options, tmp_path / "mds", progress=False, log=lambda _: None)
    assert summaries["train"].documents + summaries["val"].documents == 400


def test_the_command_prints_a_summary_and_never_overwrites(tmp_path, corpus, capsys):
    out = tmp_path / "tok"
    argv = ["tokenizer", "--source", str(corpus), "--out", str(out), "--vocab-size", "256",
            "--text-field", "body", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wordpiece tokenizer, 256 tokens" in printed and "documents/s" in printed
    assert "tokens per word" in printed and "bert-base-uncased:" in printed
    before = (out / "tokenizer.json").read_bytes()
    assert main(argv) == 2
    assert "already exists; choose another --out, or pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--type", "bpe"]) == 0
    assert (out / "tokenizer.json").read_bytes() != before
    assert not list(tmp_path.glob(".tok.*"))  # no partial or set-aside copy left
    other = tmp_path / "runs"  # a folder of something else is never replaced
    (other / "keep").mkdir(parents=True)
    assert main([*argv[:4], str(other), *argv[5:], "--overwrite"]) == 2
    assert "is not a tokenizer written by `mosaic-pretrain tokenizer`" in capsys.readouterr().err
    assert (other / "keep").is_dir()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(vocab_size=1000), "--vocab-size must be a multiple of 64 .* e.g. 1024"),
        (dict(kind="sentencepiece"), "--type 'sentencepiece' is unknown"),
        (dict(min_frequency=0), "--min-frequency must be at least 1"),
        (dict(max_documents=0), "--max-documents must be positive"),
    ],
)
def test_bad_options(tmp_path, corpus, changes, message):
    with pytest.raises(ConfigError, match=message):
        train_tokenizer(options(corpus, **changes), tmp_path / "tok", progress=False)
    assert not (tmp_path / "tok").exists()


def test_bad_sources_are_convert_errors(tmp_path, corpus):
    with pytest.raises(DataError, match="no such file or directory"):
        train_tokenizer(options(tmp_path / "nowhere"), tmp_path / "tok", progress=False)
    with pytest.raises(DataError, match=r"cases.jsonl:1: no 'text' field; name the text field"):
        train_tokenizer(
            options(corpus, source_options=SourceOptions()), tmp_path / "tok", progress=False
        )
    assert not (tmp_path / "tok").exists()


def test_max_documents_bounds_what_is_read(tmp_path, corpus):
    manifest = train_tokenizer(options(corpus, max_documents=100), tmp_path / "tok", progress=False)
    assert manifest["read"]["documents"] == 100


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram", "bert-base-uncased"])
def test_word_starts_agree_with_the_tokenizers_own_words(tmp_path, corpus, kind):
    """What whole-word masking takes for words is what the tokenizer split into words."""
    from mosaic_pretrain.data.tokenizer import word_starts

    if kind == "bert-base-uncased":
        tokenizer = load_tokenizer(kind)
    else:
        train_tokenizer(options(corpus, kind=kind), tmp_path / kind, progress=False)
        tokenizer = load_tokenizer(str(tmp_path / kind))
    starts = word_starts(tokenizer)
    text = " ".join(word(n) for n in range(0, 1700, 37)) + ", estoppel! tortfeasors."
    encoding = tokenizer(text, add_special_tokens=False)
    ids, word_ids = encoding["input_ids"], encoding.word_ids()
    assert len(set(word_ids)) < len(ids)  # some words have several pieces
    special = set(tokenizer.all_special_ids)  # never masked, so never part of a word
    for position, (token, word_id) in enumerate(zip(ids, word_ids, strict=True)):
        if token in special or (position and ids[position - 1] in special):
            continue
        opens = position == 0 or word_ids[position - 1] != word_id
        assert starts[token] == opens, (position, tokenizer.convert_ids_to_tokens(token))


def test_a_tokenizer_path_that_does_not_exist_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; fix the path, or train one there"):
        load_tokenizer(str(tmp_path / "my-tokenizer"))
