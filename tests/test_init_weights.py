"""Starting a run from saved weights (`model.init_from`, and MosaicML's hf_bert `use_pretrained`):
the weights really load, and every source that cannot fill the recipe's model is one line."""

import gc
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertTokenizerFast

from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
from mosaic_pretrain.commands.check import check_recipe
from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.data.tokenizer import BUNDLED_VOCABULARIES, model_config_for
from mosaic_pretrain.errors import CheckpointError, ConfigError
from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.train.builders import build_model
from mosaic_pretrain.train.composer_model import MLMComposerModel
from mosaic_pretrain.train.export import save_hf_directory
from mosaic_pretrain.train.resume import check_resume, recipe_record

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
# The smoke recipe's model (preset mini) cut to one layer, without dropout, so a training step's
# loss is the model's own function of the batch.
ONE_LAYER = [
    "model.model_config.num_hidden_layers=1",
    "model.model_config.attention_probs_dropout_prob=0.0",
]
QUICK = [
    *ONE_LAYER,
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
    "log_to_console=false",
    "eval_loader=null",
    "max_duration=1ba",
    "export_folder=null",
]
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # as the recipe's
HF_BERT = ["model.name=hf_bert", "model.model_config.attention_backend=null"]


def recipe(tmp_path: Path, *overrides: str):
    return load_config(SMOKE, [*QUICK, f"save_folder={tmp_path}/run", *overrides])


def mosaic_source(tokenizer, out: Path, scale: float = 1.0, **sizes) -> Path:
    """A saved MosaicBERT of the one-layer smoke size. `scale` sharpens its word embeddings, so
    its loss is far from a fresh model's (about ln of the vocabulary)."""
    torch.manual_seed(3)
    config = model_config_for(tokenizer, "mini", **{"num_hidden_layers": 1, **sizes})
    model = MosaicBertForMaskedLM(config)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.mul_(scale)
    return save_hf_directory(model.eval(), tokenizer, out)


def bert_config(**changes) -> BertConfig:
    """transformers' BERT of the sizes hf_bert builds for the one-layer smoke recipe."""
    sizes = dict(
        vocab_size=30522, hidden_size=256, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=1024, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertConfig(**{**sizes, **changes})


def bert_source(out: Path, model_class=BertForMaskedLM, scale: float = 1.0, **changes) -> Path:
    torch.manual_seed(4)
    model = model_class(bert_config(**changes))
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.mul_(scale)
    model.save_pretrained(out)
    return out


def built(config, tokenizer):
    return build_model(config.model, tokenizer, config.algorithms.fused_layernorm is not None)


def problems(config) -> str:
    return " | ".join(check_recipe(config))


# --- the weights load ----------------------------------------------------------------------


def test_a_mosaic_bert_directory_fills_the_recipe_model(tmp_path, bert_tokenizer):
    source = mosaic_source(bert_tokenizer, tmp_path / "source", attention_backend="eager")
    lower = "model.model_config.low_precision_layernorm=true"
    model = built(recipe(tmp_path, f"model.init_from={source}", lower), bert_tokenizer)
    saved = MosaicBertForMaskedLM.from_pretrained(source)
    assert model.state_dict().keys() == saved.state_dict().keys()
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    # tied as trained: one tensor, so an update of the embeddings moves the decoder too
    assert model.head.decoder.weight is model.bert.embeddings.word_embeddings.weight
    # the recipe's choices that do not change what the weights mean are the recipe's
    assert model.config.attention_backend == "auto"  # saved: eager
    assert model.config.low_precision_layernorm  # saved: off


def test_hf_bert_starts_from_a_bert_pretraining_checkpoint(tmp_path, bert_tokenizer):
    """The hub's bert-base-uncased is a BertForPreTraining: its pooler and next-sentence head
    have no place in a masked-LM model and are left out; everything else loads."""
    source = bert_source(tmp_path / "bert", BertForPreTraining)
    config = recipe(
        tmp_path, *HF_BERT, f"model.init_from={source}", "model.model_config.vocab_size=30522"
    )
    model = built(config, bert_tokenizer)
    saved = BertForPreTraining.from_pretrained(source).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_use_pretrained_is_mosaicmls_name_for_it(tmp_path, bert_tokenizer):
    source = bert_source(tmp_path / "bert")
    config = recipe(
        tmp_path, *HF_BERT, f"model.pretrained_model_name={source}", "model.use_pretrained=true",
        "model.model_config.vocab_size=30522",
    )  # fmt: skip
    model = built(config, bert_tokenizer)
    saved = BertForMaskedLM.from_pretrained(source).state_dict()
    assert all(torch.equal(tensor, saved[name]) for name, tensor in model.state_dict().items())


def _first_batch_loss(config) -> tuple[float, dict]:
    """The logged loss of a one-batch run, and the batch it trained on."""
    trainer = train(config)
    batch = dict(trainer.state.batch)
    trainer.close()
    del trainer
    gc.collect()
    series = read_metrics(Path(config.save_folder) / METRICS_FILE)
    return series["loss/train/total"][0], batch


@pytest.mark.parametrize("kind", ["mosaic_bert", "hf_bert"])
def test_a_run_from_saved_weights_has_their_loss_on_its_first_batch(
    kind, tmp_path, tmp_path_factory, bert_tokenizer
):
    corpus = tmp_path_factory.getbasetemp() / "init-weights-corpus"
    if kind == "mosaic_bert":
        source = mosaic_source(bert_tokenizer, tmp_path / "source", scale=8.0)
        extra = []
        saved = MosaicBertForMaskedLM.from_pretrained(source, **NO_DROPOUT)
    else:
        source = bert_source(tmp_path / "source", scale=8.0)
        extra = [*HF_BERT, "model.model_config.vocab_size=30522"]
        saved = BertForMaskedLM.from_pretrained(source, attn_implementation="sdpa", **NO_DROPOUT)
    config = recipe(tmp_path, f"data_local={corpus}", f"model.init_from={source}", *extra)
    logged, batch = _first_batch_loss(config)
    composer_model = MLMComposerModel(saved.train())
    with torch.no_grad():
        expected = float(composer_model.loss(composer_model(batch), batch))
    assert abs(expected - math.log(len(bert_tokenizer))) > 1.0  # not a fresh model's loss
    assert logged == pytest.approx(expected, rel=1e-5)


# --- sources that cannot fill the recipe's model ----------------------------------------------


def test_other_sizes_name_each_difference_and_the_preset_that_fits(tmp_path, bert_tokenizer):
    source = mosaic_source(bert_tokenizer, tmp_path / "source", num_hidden_layers=4)
    message = problems(recipe(tmp_path, f"model.init_from={source}"))
    assert "holds another model than the recipe's: num_hidden_layers 4 (recipe: 1)" in message
    assert "set model.model_config.num_hidden_layers=4" in message
    whole = recipe(tmp_path, f"model.init_from={source}", "model.model_config.preset=base")
    whole.model.model_config.num_hidden_layers = None  # the preset's
    for problem in ("hidden_size 256 (recipe: 768)", "set model.model_config.preset=mini"):
        assert problem in problems(whole)


def test_the_preset_hint_names_what_the_preset_leaves_out(tmp_path):
    source = bert_source(tmp_path / "bert", num_hidden_layers=4)  # mini's sizes, BERT's vocab
    config = recipe(
        tmp_path, *HF_BERT, f"model.init_from={source}", "model.model_config.preset=base"
    )
    config.model.model_config.num_hidden_layers = None
    message = problems(config)
    assert "set model.model_config.preset=mini model.model_config.vocab_size=30522" in message


def test_an_untied_decoder_is_another_function(tmp_path):
    source = bert_source(tmp_path / "bert", tie_word_embeddings=False)
    config = recipe(
        tmp_path, *HF_BERT, f"model.init_from={source}", "model.model_config.vocab_size=30522"
    )
    assert "tie_word_embeddings False (recipe: True, which hf_bert fixes)" in problems(config)


def test_an_encoder_without_its_masked_lm_head(tmp_path, bert_tokenizer):
    """What a GLUE sweep saves for the tasks that start from MNLI: the encoder and its pooler."""
    torch.manual_seed(0)
    model = MosaicBertForMaskedLM(model_config_for(bert_tokenizer, "mini", num_hidden_layers=1))
    encoder = save_hf_directory(model.bert, bert_tokenizer, tmp_path / "encoder")
    config = recipe(tmp_path, f"model.init_from={encoder}")
    with pytest.raises(CheckpointError, match="holds an encoder without the masked-LM head"):
        built(config, bert_tokenizer)


def test_another_feed_forward_is_another_function(tmp_path, bert_tokenizer):
    source = mosaic_source(bert_tokenizer, tmp_path / "source", ffn_activation="swiglu")
    message = problems(recipe(tmp_path, f"model.init_from={source}"))
    assert "ffn_activation 'swiglu' (recipe: 'geglu')" in message


def test_the_default_vocabulary_of_hf_bert_is_named_with_its_fix(tmp_path, bert_tokenizer):
    """bert-base-uncased has 30522 rows; the recipe's default rounds the tokenizer to 30528."""
    source = bert_source(tmp_path / "bert")
    message = problems(recipe(tmp_path, *HF_BERT, f"model.init_from={source}"))
    assert "vocab_size 30522 (recipe: 30528)" in message
    assert "set model.model_config.vocab_size=30522" in message


def test_fewer_embedding_rows_than_tokens(tmp_path, bert_tokenizer):
    source = mosaic_source(bert_tokenizer, tmp_path / "source", vocab_size=30400)
    config = recipe(tmp_path, f"model.init_from={source}", "model.model_config.vocab_size=30400")
    assert "has vocab_size 30400, fewer rows than tokenizer" in problems(config)


def test_another_tokenizer(tmp_path, bert_tokenizer):
    """Saved with the same vocabulary but cased: the same ids stand for other text."""
    cased = BertTokenizerFast(
        vocab_file=str(BUNDLED_VOCABULARIES["bert-base-uncased"]), do_lower_case=False
    )
    source = mosaic_source(cased, tmp_path / "source")
    message = problems(recipe(tmp_path, f"model.init_from={source}"))
    assert "was saved with another tokenizer (30522 tokens) than the recipe's" in message
    assert f"set tokenizer_name={source}" in message


def test_a_bert_is_continued_by_hf_bert_and_a_mosaic_bert_by_mosaic_bert(tmp_path, bert_tokenizer):
    bert = bert_source(tmp_path / "bert")
    assert "set model.name=hf_bert" in problems(recipe(tmp_path, f"model.init_from={bert}"))
    ours = mosaic_source(bert_tokenizer, tmp_path / "ours")
    message = problems(recipe(tmp_path, *HF_BERT, f"model.init_from={ours}"))
    assert "is a MosaicBERT model; set model.name=mosaic_bert" in message


def test_mosaicmls_original_layout_is_sent_to_import(tmp_path):
    original = tmp_path / "original"
    original.mkdir()
    (original / "config.json").write_text(
        json.dumps({"model_type": "bert", "alibi_starting_size": 512, "vocab_size": 30528})
    )
    message = problems(recipe(tmp_path, f"model.init_from={original}"))
    assert f"original layout; convert it with `mosaic-pretrain import {original} DIR`" in message


@pytest.mark.parametrize(
    "where, expected",
    [
        ("missing", "does not exist"),
        ("no-config", "holds no config.json"),
        ("file", "is truncated or not a Composer checkpoint"),
        ("hub", "cannot be fetched from the Hugging Face hub"),
    ],
)
def test_sources_that_hold_no_model(tmp_path, where, expected):
    paths = {
        "missing": str(tmp_path / "nothing-here"),
        "no-config": str(tmp_path),
        "file": str(tmp_path / "ep0-ba2-rank0.pt"),
        "hub": "someone/no-such-model",
    }
    (tmp_path / "ep0-ba2-rank0.pt").write_bytes(b"x")
    message = problems(recipe(tmp_path, f"model.init_from={paths[where]}"))
    assert f"model.init_from={paths[where]}" in message.replace("'", "")
    assert expected in message
    if where == "hub":
        assert "huggingface-cli download someone/no-such-model --local-dir DIR" in message


def test_weights_that_do_not_fill_their_own_config(tmp_path, bert_tokenizer):
    source = mosaic_source(bert_tokenizer, tmp_path / "source")
    weights = load_file(source / "model.safetensors")
    del weights["bert.encoder.layer.0.mlp.wo.weight"]
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing bert\.encoder\.layer\.0\.mlp\.wo\.weight"):
        built(recipe(tmp_path, f"model.init_from={source}"), bert_tokenizer)


def test_pretrained_model_name_selects_sizes_and_points_a_model_to_init_from(
    tmp_path, bert_tokenizer
):
    source = mosaic_source(bert_tokenizer, tmp_path / "source")
    config = recipe(tmp_path, f"model.pretrained_model_name={source}")
    with pytest.raises(
        ConfigError, match=rf"to start from its weights set model.init_from={source}"
    ):
        built(config, bert_tokenizer)
    bert_tokenizer.save_pretrained(tmp_path / "tokenizer")  # recipes set it to the tokenizer
    tokenizer_dir = recipe(tmp_path, f"model.pretrained_model_name={tmp_path / 'tokenizer'}")
    assert built(tokenizer_dir, bert_tokenizer).config.num_hidden_layers == 1


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.use_pretrained=true"], "model.use_pretrained is MosaicML's hf_bert key"),
        (
            [*HF_BERT, "model.use_pretrained=true", "model.init_from=x"],
            "set model.init_from or model.use_pretrained, not both",
        ),
        ([*HF_BERT, "model.use_pretrained=true"], "needs model.pretrained_model_name"),
    ],
)
def test_use_pretrained_misuse(tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        recipe(tmp_path, *overrides)


def test_a_resumed_run_does_not_read_the_weights_it_started_from(
    tmp_path, tmp_path_factory, bert_tokenizer
):
    """Its weights come from the checkpoint: the source may be gone by then, and the recipe
    need not change."""
    corpus = tmp_path_factory.getbasetemp() / "init-weights-corpus"
    source = mosaic_source(bert_tokenizer, tmp_path / "source")
    common = [f"data_local={corpus}", f"model.init_from={source}", "save_interval=1ba"]
    first, _ = _first_batch_loss(recipe(tmp_path, *common))
    shutil.rmtree(source)
    resumed = recipe(tmp_path, *common, "autoresume=true", "max_duration=2ba")
    assert check_recipe(resumed) == []
    trainer = train(resumed)
    assert trainer.state.timestamp.batch.value == 2
    trainer.close()
    series = read_metrics(Path(resumed.save_folder) / METRICS_FILE)
    assert series["loss/train/total"][0] == first and 1 in series["loss/train/total"]


def test_a_checkpoint_of_a_run_sized_by_a_model_directory_still_exports(tmp_path, bert_tokenizer):
    """Before init_from, pretrained_model_name=DIR gave a run its model's sizes (and weights):
    the model its checkpoints hold is built from that directory for export and resume."""
    source = mosaic_source(bert_tokenizer, tmp_path / "source", num_hidden_layers=2)
    config = recipe(tmp_path, f"model.pretrained_model_name={source}")
    config.model.model_config.num_hidden_layers = None  # the preset's 4 in a new run
    model = build_model(config.model, bert_tokenizer, False, initial_weights=False)
    assert model.config.num_hidden_layers == 2  # the directory's


def test_a_resume_may_drop_the_weights_it_started_from(tmp_path, bert_tokenizer):
    """A resumed run's weights come from its checkpoint: the source may be gone by then."""
    source = mosaic_source(bert_tokenizer, tmp_path / "source")
    started = recipe(tmp_path, f"model.init_from={source}")
    record = {"recipe": recipe_record(started), "code_version": "test"}
    check_resume(recipe(tmp_path), tmp_path / "ep0-ba1-rank0.pt", record)


def test_a_published_recipe_takes_the_tokenizer_and_weights_of_one_directory(
    tmp_path, bert_tokenizer
):
    """MosaicBERT's recipes set pretrained_model_name to ${tokenizer_name}: naming one export
    as both tokenizer and init_from is no model directory given as sizes."""
    published = SMOKE.parent / "mosaic-bert-base.yaml"
    source = mosaic_source(bert_tokenizer, tmp_path / "source")
    config = load_config(
        published, [f"tokenizer_name={source}", f"model.init_from={source}", "precision=fp32"]
    )
    assert config.model.pretrained_model_name == str(source)
    message = problems(config)
    assert "holds a model, but" not in message
    assert "holds another model than the recipe's: hidden_size 256 (recipe: 768)" in message
