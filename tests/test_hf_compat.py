"""Save -> load through our classes and transformers' Auto classes reproduces logits exactly."""

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
)
from mosaic_pretrain.model.attention import backend_unavailable_reason
from tests.conftest import make_ids

CASES = [
    (MosaicBertModel, AutoModel, "last_hidden_state", {}),
    (MosaicBertForMaskedLM, AutoModelForMaskedLM, "logits", {}),
    (
        MosaicBertForSequenceClassification,
        AutoModelForSequenceClassification,
        "logits",
        {"num_labels": 3},
    ),
]


@pytest.mark.parametrize(
    ("model_class", "auto_class", "output", "extra"),
    CASES,
    ids=[case[0].__name__ for case in CASES],
)
def test_round_trip_reproduces_outputs_exactly(
    tmp_path, tiny_config, model_class, auto_class, output, extra
):
    model = model_class(tiny_config(attention_backend="sdpa", **extra)).eval()
    ids, mask = make_ids([10, 4], 10)
    with torch.no_grad():
        expected = getattr(model(ids, mask), output)
    model.save_pretrained(tmp_path)
    for loader in (model_class, auto_class):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is model_class
        with torch.no_grad():
            assert torch.equal(getattr(loaded(ids, mask), output), expected), loader.__name__


def test_saved_directory_holds_safetensors_and_our_model_type(tmp_path, tiny_config):
    model = MosaicBertForMaskedLM(tiny_config())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "pytorch_model.bin").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "mosaic_bert"
    assert config["alibi_starting_size"] == 16
    loaded_config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded_config, MosaicBertConfig)
    loaded, original = loaded_config.to_diff_dict(), model.config.to_diff_dict()
    loaded.pop("_name_or_path", None)
    original.pop("_name_or_path", None)
    assert loaded == original


def test_tied_weights_stay_tied_after_loading(tmp_path, tiny_config):
    MosaicBertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.head.decoder.weight is loaded.bert.embeddings.word_embeddings.weight


def test_masked_lm_checkpoint_starts_a_classifier(tmp_path, tiny_config):
    """The GLUE path: pretrained encoder weights are reused, the task head is new."""
    pretrained = MosaicBertForMaskedLM(tiny_config())
    pretrained.save_pretrained(tmp_path)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert torch.equal(
        classifier.bert.embeddings.word_embeddings.weight,
        pretrained.bert.embeddings.word_embeddings.weight,
    )
    assert torch.equal(
        classifier.bert.encoder.layer[1].mlp.wo.weight,
        pretrained.bert.encoder.layer[1].mlp.wo.weight,
    )


def test_backend_can_be_overridden_when_loading(tmp_path, tiny_config):
    MosaicBertModel(tiny_config(attention_backend="sdpa")).save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, attention_backend="eager")
    assert loaded.config.attention_backend == "eager"
    assert loaded.encoder.attention_backend == "eager"


def test_overrides_at_load_time_are_validated(tmp_path, tiny_config):
    MosaicBertModel(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="hidden_dropout_prob must be a probability"):
        AutoModel.from_pretrained(tmp_path, hidden_dropout_prob=7)


@pytest.mark.skipif(
    backend_unavailable_reason("flash_attn") is None, reason="flash-attn is installed here"
)
def test_flash_attn_checkpoint_loads_on_a_machine_without_it(tmp_path, tiny_config):
    """A config saved on a GPU box loads anywhere; building it needs a runnable backend."""
    MosaicBertModel(tiny_config()).save_pretrained(tmp_path)
    tiny_config(attention_backend="flash_attn").save_pretrained(tmp_path)  # as saved on a GPU
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.attention_backend == "flash_attn"
    with pytest.raises(ConfigError, match="flash_attn"):
        AutoModel.from_pretrained(tmp_path)
    assert AutoModel.from_pretrained(tmp_path, attention_backend="sdpa") is not None
