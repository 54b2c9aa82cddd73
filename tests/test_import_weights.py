"""`mosaic-pretrain import`: weights in MosaicML's original MosaicBERT layout become our model.

The source state dicts are built here with the names and shapes MosaicML's `bert_layers.py`
gives them; `original_logits` computes that code's function from those tensors directly, in its
own layout (padded, ALiBi from its slope formula), so a wrong mapping of q/k/v rows, gate
halves or head names changes the answer.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForMaskedLM, BertTokenizerFast

import mosaic_pretrain.model  # noqa: F401  (registers our Auto classes)
from mosaic_pretrain.cli import main
from mosaic_pretrain.data.tokenizer import BUNDLED_VOCABULARIES
from mosaic_pretrain.errors import CheckpointError
from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.train.import_weights import import_mosaic_bert
from tests.conftest import make_ids

HIDDEN, LAYERS, HEADS, INTERMEDIATE, VOCAB = 32, 2, 4, 48, 30528
ORIGINAL_CONFIG = {  # the fields of the hub's mosaicml/mosaic-bert-base config.json, sized down
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "alibi_starting_size": 512,
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": HIDDEN,
    "initializer_range": 0.02,
    "intermediate_size": INTERMEDIATE,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": HEADS,
    "num_hidden_layers": LAYERS,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "vocab_size": VOCAB,
}


def original_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the original names and shapes (decoder tied: the same tensor)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    state = {
        "bert.embeddings.word_embeddings.weight": rand(VOCAB, HIDDEN),
        "bert.embeddings.token_type_embeddings.weight": rand(2, HIDDEN),
        "bert.embeddings.LayerNorm.weight": 1 + rand(HIDDEN),
        "bert.embeddings.LayerNorm.bias": rand(HIDDEN),
    }
    for layer in range(LAYERS):
        prefix = f"bert.encoder.layer.{layer}."
        state |= {
            prefix + "attention.self.Wqkv.weight": rand(3 * HIDDEN, HIDDEN, scale=0.5),
            prefix + "attention.self.Wqkv.bias": rand(3 * HIDDEN),
            prefix + "attention.output.dense.weight": rand(HIDDEN, HIDDEN),
            prefix + "attention.output.dense.bias": rand(HIDDEN),
            prefix + "attention.output.LayerNorm.weight": 1 + rand(HIDDEN),
            prefix + "attention.output.LayerNorm.bias": rand(HIDDEN),
            prefix + "mlp.gated_layers.weight": rand(2 * INTERMEDIATE, HIDDEN, scale=0.5),
            prefix + "mlp.wo.weight": rand(HIDDEN, INTERMEDIATE),
            prefix + "mlp.wo.bias": rand(HIDDEN),
            prefix + "mlp.layernorm.weight": 1 + rand(HIDDEN),
            prefix + "mlp.layernorm.bias": rand(HIDDEN),
        }
    state |= {
        "cls.predictions.transform.dense.weight": rand(HIDDEN, HIDDEN),
        "cls.predictions.transform.dense.bias": rand(HIDDEN),
        "cls.predictions.transform.LayerNorm.weight": 1 + rand(HIDDEN),
        "cls.predictions.transform.LayerNorm.bias": rand(HIDDEN),
        "cls.predictions.decoder.weight": state["bert.embeddings.word_embeddings.weight"],
        "cls.predictions.decoder.bias": rand(VOCAB),
    }
    return state


def original_logits(state, input_ids, attention_mask):
    """The original MosaicBERT masked-LM function, from its own layout, on padded batches."""
    norm = torch.nn.functional.layer_norm
    gelu = torch.nn.functional.gelu
    eps = ORIGINAL_CONFIG["layer_norm_eps"]
    batch, length = input_ids.shape
    head_size = HIDDEN // HEADS
    x = state["bert.embeddings.word_embeddings.weight"][input_ids]
    x = x + state["bert.embeddings.token_type_embeddings.weight"][torch.zeros_like(input_ids)]
    x = norm(x, (HIDDEN,), state["bert.embeddings.LayerNorm.weight"],
             state["bert.embeddings.LayerNorm.bias"], eps)  # fmt: skip
    # ALiBi for a power-of-two head count: slopes start^1 .. start^H, start = 2^(-8/H)
    start = 2 ** (-8 / HEADS)
    slopes = torch.tensor([start ** (i + 1) for i in range(HEADS)])
    distance = (torch.arange(length)[None, :] - torch.arange(length)[:, None]).abs()
    bias = -slopes[:, None, None] * distance  # (H, S, S)
    bias = bias[None] + (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
    for layer in range(LAYERS):
        p = f"bert.encoder.layer.{layer}."
        qkv = x @ state[p + "attention.self.Wqkv.weight"].T + state[p + "attention.self.Wqkv.bias"]
        qkv = qkv.view(batch, length, 3, HEADS, head_size)  # '(t h d)' with t = q, k, v
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, S, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_size) + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, HIDDEN)
        out = attended @ state[p + "attention.output.dense.weight"].T
        out = out + state[p + "attention.output.dense.bias"]
        x = norm(out + x, (HIDDEN,), state[p + "attention.output.LayerNorm.weight"],
                 state[p + "attention.output.LayerNorm.bias"], eps)  # fmt: skip
        both = x @ state[p + "mlp.gated_layers.weight"].T
        gated, non_gated = both[..., :INTERMEDIATE], both[..., INTERMEDIATE:]  # GELU on the first
        out = (gelu(gated) * non_gated) @ state[p + "mlp.wo.weight"].T + state[p + "mlp.wo.bias"]
        x = norm(out + x, (HIDDEN,), state[p + "mlp.layernorm.weight"],
                 state[p + "mlp.layernorm.bias"], eps)  # fmt: skip
    h = x @ state["cls.predictions.transform.dense.weight"].T
    h = gelu(h + state["cls.predictions.transform.dense.bias"])
    h = norm(h, (HIDDEN,), state["cls.predictions.transform.LayerNorm.weight"],
             state["cls.predictions.transform.LayerNorm.bias"], 1e-12)  # fmt: skip
    return h @ state["cls.predictions.decoder.weight"].T + state["cls.predictions.decoder.bias"]


def hub_directory(folder: Path, state=None, config=None, weights="pytorch_model.bin") -> Path:
    """A directory laid out like the hub's mosaicml/mosaic-bert-base (no tokenizer files)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or ORIGINAL_CONFIG))
    state = original_state_dict() if state is None else state
    if weights.endswith(".safetensors"):
        untied = {k: v.clone() for k, v in state.items()}  # safetensors refuses shared storage
        save_file(untied, str(folder / weights))
    else:
        torch.save(state, folder / weights)
    return folder


def digest(folder: Path) -> str:
    hashed = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            hashed.update(path.name.encode() + path.read_bytes())
    return hashed.hexdigest()


def imported_logits(out: Path, input_ids, attention_mask) -> torch.Tensor:
    model = AutoModelForMaskedLM.from_pretrained(out, attention_backend="eager").eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
def test_an_imported_model_computes_the_original_function(tmp_path, weights):
    source = hub_directory(tmp_path / "mosaic-bert", weights=weights)
    before = digest(source)
    out = import_mosaic_bert(str(source), tmp_path / "ours")
    assert digest(source) == before  # the source is only read
    assert f"`mosaic-pretrain import` of {source}" in (out / "README.md").read_text()
    ids, mask = make_ids([12, 7, 9], 12, vocab_size=1000, seed=3)
    state = original_state_dict()
    expected = original_logits(state, ids, mask)
    got = imported_logits(out, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-4)
    # The tokenizer MosaicML's models were trained with, saved with the weights.
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.head.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_the_first_half_of_gated_layers_is_the_gate(tmp_path):
    """The original passes the first half of `gated_layers` through GELU and multiplies by the
    second. The imported model agrees with that, and swapping the halves gives clearly other
    logits, so the agreement pins which half is the gate."""
    state = original_state_dict(seed=5)
    ids, mask = make_ids([10, 10], 10, vocab_size=1000, seed=1)
    out = import_mosaic_bert(str(hub_directory(tmp_path / "src", state)), tmp_path / "ours")
    got = imported_logits(out, ids, mask)
    torch.testing.assert_close(got, original_logits(state, ids, mask), atol=2e-5, rtol=1e-4)
    swapped = dict(state)
    for layer in range(LAYERS):
        name = f"bert.encoder.layer.{layer}.mlp.gated_layers.weight"
        gate, value = state[name].chunk(2)
        swapped[name] = torch.cat([value, gate])
    assert not torch.allclose(original_logits(swapped, ids, mask), got, atol=1e-3)


def test_query_key_and_value_rows_keep_their_order(tmp_path):
    """Zero query and key rows make attention a fixed ALiBi-weighted average of the values: the
    result depends on which rows are the values, so a permuted Wqkv gives other logits."""
    state = original_state_dict()
    for layer in range(LAYERS):
        wqkv = state[f"bert.encoder.layer.{layer}.attention.self.Wqkv.weight"]
        wqkv[: 2 * HIDDEN] = 0.0  # queries and keys
        state[f"bert.encoder.layer.{layer}.attention.self.Wqkv.bias"][: 2 * HIDDEN] = 0.0
    ids, mask = make_ids([9, 6], 9, vocab_size=1000, seed=2)
    out = import_mosaic_bert(str(hub_directory(tmp_path / "src", state)), tmp_path / "ours")
    expected = original_logits(state, ids, mask)
    torch.testing.assert_close(imported_logits(out, ids, mask)[mask.bool()], expected[mask.bool()],
                               atol=2e-5, rtol=1e-4)  # fmt: skip
    permuted = {k: v.clone() for k, v in state.items()}
    for layer in range(LAYERS):
        for kind in ("weight", "bias"):
            name = f"bert.encoder.layer.{layer}.attention.self.Wqkv.{kind}"
            q, k, v = permuted[name].chunk(3)
            permuted[name] = torch.cat([v, k, q])
    assert not torch.allclose(original_logits(permuted, ids, mask), expected, atol=1e-3)


def test_a_composer_checkpoint_of_mosaicmls_benchmark_code_is_imported(tmp_path):
    """Their checkpoints hold the model state under `model.` and the BertConfig as recorded by
    Composer's HuggingFaceModel."""
    state = original_state_dict()
    checkpoint = {
        "state": {
            "model": {f"model.{name}": tensor for name, tensor in state.items()},
            "integrations": {"huggingface": {"model": {"config": {"content": ORIGINAL_CONFIG}}}},
        }
    }
    torch.save(checkpoint, tmp_path / "ep1-ba1000-rank0.pt")
    out = import_mosaic_bert(str(tmp_path / "ep1-ba1000-rank0.pt"), tmp_path / "ours")
    ids, mask = make_ids([8, 5], 8, vocab_size=1000, seed=4)
    torch.testing.assert_close(
        imported_logits(out, ids, mask)[mask.bool()],
        original_logits(state, ids, mask)[mask.bool()],
        atol=2e-5,
        rtol=1e-4,
    )


def cased_tokenizer(folder: Path) -> Path:
    """bert-base-uncased's vocabulary without lower-casing: a tokenizer told apart by its config."""
    BertTokenizerFast(vocab_file=str(BUNDLED_VOCABULARIES["bert-base-uncased"]),
                      do_lower_case=False).save_pretrained(folder)  # fmt: skip
    return folder


def do_lower_case(out: Path) -> bool:
    return json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"]


def test_the_sources_own_tokenizer_is_kept(tmp_path):
    source = hub_directory(tmp_path / "src")
    cased_tokenizer(source)
    assert do_lower_case(import_mosaic_bert(str(source), tmp_path / "ours")) is False


def test_the_command_line(tmp_path, capsys):
    source = hub_directory(tmp_path / "src")
    tokenizer = cased_tokenizer(tmp_path / "tokenizer")
    assert main(["import", str(source), str(tmp_path / "ours"), "--tokenizer", str(tokenizer)]) == 0
    assert "imported to" in capsys.readouterr().out
    assert do_lower_case(tmp_path / "ours") is False
    # Again into the same directory: refused, the first import untouched.
    before = digest(tmp_path / "ours")
    assert main(["import", str(source), str(tmp_path / "ours")]) == 2
    assert "already exists; choose a new directory" in capsys.readouterr().err
    assert digest(tmp_path / "ours") == before


def _one_line_error(tmp_path, source, match):
    with pytest.raises(CheckpointError, match=match) as caught:
        import_mosaic_bert(str(source), tmp_path / "ours")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "ours").exists()


def test_a_missing_tensor_is_named(tmp_path):
    state = original_state_dict()
    del state["bert.encoder.layer.1.mlp.wo.bias"]
    source = hub_directory(tmp_path / "src", state)
    _one_line_error(tmp_path, source, r"missing bert\.encoder\.layer\.1\.mlp\.wo\.bias")


def test_an_extra_tensor_is_named(tmp_path):
    state = original_state_dict()
    state["bert.pooler.dense.weight"] = torch.zeros(HIDDEN, HIDDEN)
    source = hub_directory(tmp_path / "src", state)
    _one_line_error(tmp_path, source, r"extra or unmappable bert\.pooler\.dense\.weight")


def test_a_wrongly_shaped_tensor_is_named(tmp_path):
    state = original_state_dict()
    state["bert.encoder.layer.0.mlp.gated_layers.weight"] = torch.zeros(INTERMEDIATE, HIDDEN)
    source = hub_directory(tmp_path / "src", state)
    _one_line_error(tmp_path, source, r"wrongly shaped bert\.encoder\.layer\.0\.mlp\.gated_layers")


def test_an_untied_decoder_is_refused(tmp_path):
    state = original_state_dict()
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1.0
    source = hub_directory(tmp_path / "src", state)
    _one_line_error(tmp_path, source, r"not tied to the word embeddings")


def test_a_config_that_is_not_mosaic_bert_is_refused(tmp_path):
    config = {k: v for k, v in ORIGINAL_CONFIG.items() if k != "alibi_starting_size"}
    source = hub_directory(tmp_path / "src", config=config)
    _one_line_error(tmp_path, source, r"not a MosaicBERT config")


def test_another_activation_is_refused(tmp_path):
    source = hub_directory(tmp_path / "src", config={**ORIGINAL_CONFIG, "hidden_act": "relu"})
    _one_line_error(tmp_path, source, r"hidden_act 'relu'")


def test_a_directory_without_weights_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(ORIGINAL_CONFIG))
    _one_line_error(tmp_path, source, r"holds no weights")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(ORIGINAL_CONFIG))
    torch.save({"weights": Path("/etc")}, source / "pytorch_model.bin")  # a class outside the list
    _one_line_error(tmp_path, source, r"refused: its pickle refers to")


def test_a_hub_name_offline_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_line_error(
        tmp_path,
        "mosaicml/mosaic-bert-base",
        r"'mosaicml/mosaic-bert-base' is no local path and cannot be fetched from the Hugging "
        r"Face hub.*huggingface-cli download "
        r"mosaicml/mosaic-bert-base --local-dir DIR",
    )


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    small = {**ORIGINAL_CONFIG, "vocab_size": 1024}
    state = original_state_dict()
    state["bert.embeddings.word_embeddings.weight"] = state[
        "bert.embeddings.word_embeddings.weight"
    ][:1024]
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    state["cls.predictions.decoder.bias"] = state["cls.predictions.decoder.bias"][:1024]
    source = hub_directory(tmp_path / "src", state, config=small)
    _one_line_error(tmp_path, source, r"has 30522 tokens but the model's vocabulary has 1024")


def test_a_missing_local_path_is_not_taken_for_a_hub_name(tmp_path):
    _one_line_error(tmp_path, "./models/mosaic-bert", r"models/mosaic-bert does not exist")


def test_one_of_our_own_directories_is_pointed_to_where_it_is_used(tmp_path, tiny_config):
    ours = tmp_path / "src"
    MosaicBertForMaskedLM(tiny_config()).save_pretrained(ours)
    _one_line_error(
        tmp_path, ours, r"already a mosaic-pretrain model .*model\.pretrained_model_name"
    )


def test_one_of_our_own_checkpoints_is_pointed_to_export(tmp_path):
    state = {"model": {}, "callbacks": {"RunRecord": {"recipe": {}, "version": "0.1.0"}}}
    torch.save({"state": state}, tmp_path / "ep0-ba2-rank0.pt")
    _one_line_error(
        tmp_path, tmp_path / "ep0-ba2-rank0.pt", r"checkpoint of mosaic-pretrain train.*export"
    )
