import pytest

from mosaic_pretrain.data.tokenizer import (
    load_tokenizer,
    model_vocab_size,
    special_token_ids,
    tokenizer_fingerprint,
)
from mosaic_pretrain.errors import DataError


def test_bundled_bert_tokenizer_works_offline(bert_tokenizer):
    assert len(bert_tokenizer) == 30522
    assert model_vocab_size(bert_tokenizer) == 30528
    assert bert_tokenizer("Hello World")["input_ids"] == [101, 7592, 2088, 102]  # lower-cased
    assert bert_tokenizer.mask_token_id == 103
    assert special_token_ids(bert_tokenizer) == [0, 100, 101, 102, 103]


def test_a_saved_tokenizer_loads_from_its_directory(tmp_path, bert_tokenizer):
    bert_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded("Hello World")["input_ids"] == [101, 7592, 2088, 102]
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(bert_tokenizer)


def test_unreachable_hub_tokenizer_says_how_to_use_a_local_one():
    with pytest.raises(DataError) as error:
        load_tokenizer("no-such-org/no-such-tokenizer")
    message = str(error.value)
    assert "no-such-org/no-such-tokenizer" in message and "save_pretrained(DIR)" in message
    assert "\n" not in message


def test_model_config_records_the_tokenizer_and_padded_vocabulary(tmp_path, bert_tokenizer):
    from transformers import AutoConfig

    from mosaic_pretrain.data.tokenizer import model_config_for

    model_config_for(bert_tokenizer, "mini").save_pretrained(tmp_path)
    saved = AutoConfig.from_pretrained(tmp_path)
    assert saved.vocab_size == 30528
    assert saved.tokenizer_vocab_size == 30522
    assert saved.tokenizer_name == "bert-base-uncased"
    assert saved.pad_token_id == 0


def test_fingerprint_tells_cased_from_uncased_with_one_vocabulary():
    from transformers import BertTokenizerFast

    from mosaic_pretrain.data.tokenizer import BUNDLED_VOCABULARIES

    vocab = str(BUNDLED_VOCABULARIES["bert-base-uncased"])
    uncased = BertTokenizerFast(vocab_file=vocab, do_lower_case=True)
    cased = BertTokenizerFast(vocab_file=vocab, do_lower_case=False)
    assert tokenizer_fingerprint(uncased) != tokenizer_fingerprint(cased)
