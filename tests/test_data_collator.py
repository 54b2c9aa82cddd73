import numpy as np
import pytest
import torch

from mosaic_pretrain.data.collator import MLMCollator, Sample, pack_rows
from mosaic_pretrain.errors import ConfigError

SPECIALS = torch.tensor([0, 100, 101, 102, 103])


def random_samples(count: int, max_len: int = 128, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        body = rng.integers(1000, 30000, rng.integers(1, max_len - 1))
        samples.append(Sample(np.concatenate([[101], body, [102]]), index))
    return samples


@pytest.mark.parametrize("rate", [0.30, 0.15])
def test_masking_statistics(bert_tokenizer, rate):
    collator = MLMCollator(bert_tokenizer, rate, 128, seed=3)
    samples = random_samples(2000)
    batch = collator(samples)
    original = collator._layout(samples)[0]
    original = torch.from_numpy(original)
    real = batch["attention_mask"] != 0
    maskable = real & ~torch.isin(original, SPECIALS)
    chosen = batch["labels"] != -100
    assert not (chosen & ~maskable).any()  # never specials or padding
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])  # untouched elsewhere
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert abs(chosen.sum() / maskable.sum() - rate) < 0.005  # ~150k candidate tokens
    outcome = batch["input_ids"][chosen]
    kept = (outcome == original[chosen]).float().mean()
    masked = (outcome == 103).float().mean()
    assert abs(masked - 0.8) < 0.01
    # random replacements land on the original token 1/30k of the time: "kept" is ~10%
    assert abs(kept - 0.1) < 0.01
    assert not torch.isin(outcome[outcome != 103], SPECIALS).any()


def test_masking_is_reproducible_and_depends_on_the_seed(bert_tokenizer):
    samples = random_samples(64)
    first = MLMCollator(bert_tokenizer, 0.3, 128, seed=1)(samples)
    again = MLMCollator(bert_tokenizer, 0.3, 128, seed=1)(samples)
    other = MLMCollator(bert_tokenizer, 0.3, 128, seed=2)(samples)
    for key in first:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["labels"], other["labels"])


def test_batches_are_padded_to_max_seq_len(bert_tokenizer):
    batch = MLMCollator(bert_tokenizer, 0.3, 64, seed=0)(random_samples(8, max_len=20))
    assert batch["input_ids"].shape == (8, 64)
    assert batch["sample_index"].tolist() == list(range(8))
    assert (batch["token_type_ids"] == 0).all()


def test_packing_keeps_documents_apart_and_within_max_seq_len(bert_tokenizer):
    samples = random_samples(100, max_len=60, seed=4)
    batch = MLMCollator(bert_tokenizer, 0.0, 128, seed=0, packing=True)(samples)
    mask = batch["attention_mask"]
    assert mask.shape[1] == 128 and mask.shape[0] < len(samples)
    assert (mask != 0).sum() == sum(len(s.input_ids) for s in samples)  # every token, once
    found = []  # documents in row order, and in order within each row
    for row_ids, row_mask in zip(batch["input_ids"], mask, strict=True):
        for document in row_mask.unique():
            if document == 0:
                continue
            found.append(row_ids[row_mask == document].tolist())
    assert sorted(found) == sorted(s.input_ids.tolist() for s in samples)
    # sample_index lists the documents in that same order, so a run of rows owns a run of it.
    assert sorted(batch["sample_index"].tolist()) == list(range(100))
    assert found == [samples[i].input_ids.tolist() for i in batch["sample_index"]]


def test_pack_rows_first_fit_decreasing():
    assert pack_rows([5, 3, 4, 2, 6], 8) == [[3, 4], [0, 1], [2]]
    rows = pack_rows([7, 7, 1, 1], 8)
    assert all(sum([7, 7, 1, 1][i] for i in row) <= 8 for row in rows)


def test_bad_mlm_probability(bert_tokenizer):
    with pytest.raises(ConfigError, match="mlm_probability must be in"):
        MLMCollator(bert_tokenizer, 1.5, 128)


# --- whole-word masking ----------------------------------------------------------------------


def words_of(ids: torch.Tensor, maskable: torch.Tensor, starts: np.ndarray) -> list[list]:
    """(row, [columns]) of each word, found the slow way: a word opens at a start piece or after
    an unmaskable token, and takes the continuation pieces after it."""
    found = []
    for row in range(ids.shape[0]):
        current = None
        for column in range(ids.shape[1]):
            if not maskable[row, column]:
                current = None
                continue
            if current is None or starts[int(ids[row, column])]:
                current = [row, []]
                found.append(current)
            current[1].append(column)
    return found


@pytest.mark.parametrize("rate", [0.30, 0.15])
def test_whole_word_masking_chooses_words_and_keeps_the_token_rate(bert_tokenizer, rate):
    from mosaic_pretrain.data.tokenizer import word_starts

    collator = MLMCollator(bert_tokenizer, rate, 128, seed=5, whole_word=True)
    samples = random_samples(1500)
    batch = collator(samples)
    original = torch.from_numpy(collator._layout(samples)[0])
    maskable = (batch["attention_mask"] != 0) & ~torch.isin(original, SPECIALS)
    chosen = batch["labels"] != -100
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    words = words_of(original, maskable, word_starts(bert_tokenizer))
    multi_piece = 0
    outcomes = {"mask": 0, "kept": 0, "random": 0}
    for row, columns in words:
        picked = chosen[row, columns]
        assert picked.all() or not picked.any()  # never a partial word
        multi_piece += len(columns) > 1
        if picked.all():
            now, before = batch["input_ids"][row, columns], original[row, columns]
            if (now == 103).all():
                outcomes["mask"] += 1
            elif torch.equal(now, before):
                outcomes["kept"] += 1
            else:
                assert not (now == 103).any()  # one choice for the whole word
                outcomes["random"] += 1
    assert multi_piece > 10_000  # the test data has words of several pieces
    assert abs(chosen.sum() / maskable.sum() - rate) < 0.01  # the token rate, in expectation
    total = sum(outcomes.values())
    assert abs(total / len(words) - rate) < 0.01
    assert abs(outcomes["mask"] / total - 0.8) < 0.015
    assert abs(outcomes["kept"] / total - 0.1) < 0.015
    assert abs(outcomes["random"] / total - 0.1) < 0.015


def test_whole_word_masking_is_reproducible_from_seed_and_samples(bert_tokenizer):
    samples = random_samples(64)
    first = MLMCollator(bert_tokenizer, 0.3, 128, seed=1, whole_word=True)(samples)
    again = MLMCollator(bert_tokenizer, 0.3, 128, seed=1, whole_word=True)(samples)
    tokens = MLMCollator(bert_tokenizer, 0.3, 128, seed=1)(samples)
    for key in first:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["labels"], tokens["labels"])
    packed = MLMCollator(bert_tokenizer, 0.3, 128, seed=1, whole_word=True, packing=True)
    assert (packed(samples)["labels"] != -100).any()


def test_a_piece_after_cls_starts_a_word_and_a_document_ends_one(bert_tokenizer):
    """A document cut inside a word begins with a ## piece: it starts a word of its own, which
    its next ## piece continues; a word never runs on into the next packed document, even where
    no special token stands between them (a tokenizer that adds none)."""
    piece = bert_tokenizer.convert_tokens_to_ids("##ing")
    word = bert_tokenizer.convert_tokens_to_ids("walk")
    collator = MLMCollator(bert_tokenizer, 0.5, 8, seed=0, whole_word=True)
    #                  [CLS]  ##ing  ##ing  walk  ##ing | ##ing  ##ing
    ids = np.array([[101, piece, piece, word, piece, piece, piece, 0]])
    documents = np.array([[1, 1, 1, 1, 1, 2, 2, 0]])
    split = 0
    for seed in range(64):
        _, labels = collator.mask(ids, documents != 0, np.random.default_rng(seed), documents)
        chosen = labels[0] != -100
        assert chosen[1] == chosen[2] and chosen[3] == chosen[4] and chosen[5] == chosen[6]
        assert not chosen[0] and not chosen[7]
        split += chosen[4] != chosen[5]
    assert split > 10  # the two documents' words are chosen apart


def test_whole_word_masking_needs_a_tokenizer_that_marks_words(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mosaic_pretrain.errors import DataError

    vocabulary = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "word": 3}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]"
    )
    with pytest.raises(DataError, match="whole-word masking cannot find its words"):
        MLMCollator(plain, 0.3, 16, whole_word=True)


def test_an_added_token_is_a_word_of_its_own(bert_tokenizer):
    from mosaic_pretrain.data.tokenizer import load_tokenizer, word_starts

    tokenizer = load_tokenizer("bert-base-uncased")
    tokenizer.add_tokens(["##estoppelish"])  # looks like a continuation, is a word
    starts = word_starts(tokenizer)
    assert starts[tokenizer.convert_tokens_to_ids("##estoppelish")]
    assert not starts[tokenizer.convert_tokens_to_ids("##ing")]


def test_marks_that_disagree_with_the_tokenizers_words_are_refused(tmp_path):
    """A Metaspace that marks only a text's first word would make a document one word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mosaic_pretrain.errors import DataError

    pieces = [("[PAD]", 0.0), ("[UNK]", 0.0), ("[MASK]", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(32, 127)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=1))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="first")]
    )
    first_only = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]"
    )
    with pytest.raises(DataError, match="marks its word pieces unlike its own word split"):
        MLMCollator(first_only, 0.3, 16, whole_word=True)
