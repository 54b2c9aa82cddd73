"""Feed-forward variants: each against its formula, expanded forms at initialisation, parameter
counts, every attention backend, save/load, and the optimizer's treatment of gate ranges."""

import math

import pytest
import torch
import torch.nn.functional as F

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
)
from mosaic_pretrain.model.activations import (
    FFN_ACTIVATION_CHOICES,
    FFN_ACTIVATIONS,
    feed_forward_width,
    gate_range_parameters,
)
from mosaic_pretrain.model.modeling import MosaicBertMLP
from tests.conftest import CPU_BACKENDS, make_ids, make_tiny_config

EXPANDED = [name for name, spec in FFN_ACTIVATIONS.items() if spec.expanded]


def gate(base: str, x: torch.Tensor) -> torch.Tensor:
    """The gates written out from their definitions, independent of the module's code."""
    if base == "gelu":
        return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if base == "silu":
        return 1.0 / (1.0 + torch.exp(-x))
    if base == "atlu":
        return torch.atan(x) / math.pi + 0.5
    if base == "relu":
        return (x > 0).to(x.dtype)
    assert base == "linear"
    return torch.ones_like(x)


def direct_feed_forward(mlp: MosaicBertMLP, name: str, hidden: torch.Tensor) -> torch.Tensor:
    spec = FFN_ACTIVATIONS[name]
    alpha = mlp.act.gate_range if spec.expanded else torch.tensor(0.0)
    if spec.gated:
        w_gate, w_value = mlp.gated_layers.weight.chunk(2, dim=0)
        pre, value = hidden @ w_gate.T, hidden @ w_value.T
    else:
        pre, value = hidden @ mlp.wi.weight.T + mlp.wi.bias, 1.0
    activated = pre * ((1 + 2 * alpha) * gate(spec.base, pre) - alpha) * value
    out = activated @ mlp.wo.weight.T + mlp.wo.bias
    norm = mlp.LayerNorm
    return F.layer_norm(hidden + out, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


@pytest.mark.parametrize("name", FFN_ACTIVATION_CHOICES)
def test_each_variant_matches_its_formula(name):
    torch.manual_seed(0)
    mlp = MosaicBertMLP(make_tiny_config(ffn_activation=name)).double()
    if FFN_ACTIVATIONS[name].expanded:
        with torch.no_grad():
            mlp.act.gate_range.fill_(0.37)  # away from 0, where the expansion shows
    hidden = torch.randn(50, 32, dtype=torch.float64) * 2
    torch.testing.assert_close(mlp(hidden), direct_feed_forward(mlp, name, hidden))


@pytest.mark.parametrize("name", EXPANDED)
def test_expanded_forms_start_as_their_base_and_learn_their_range(name):
    base = {"xgelu": "gelu", "xsilu": "silu", "xatlu": "atlu", "xgeglu": "geglu"}.get(name)
    base = base or {"xswiglu": "swiglu", "xatglu": "atglu"}[name]
    ids, mask = make_ids([9, 5], 12)
    models = {}
    for variant in (base, name):
        torch.manual_seed(3)
        models[variant] = MosaicBertForMaskedLM(make_tiny_config(ffn_activation=variant))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    outputs = {variant: model(ids, attention_mask=mask, labels=labels) for variant, model in
               models.items()}  # fmt: skip
    assert torch.equal(outputs[base].logits, outputs[name].logits)
    outputs[name].loss.backward()
    ranges = gate_range_parameters(models[name])
    assert len(ranges) == 2  # one per MLP block (two layers)
    assert all(value.item() == 0.0 for value in ranges.values())
    assert all(value.grad is not None and value.grad.abs() > 0 for value in ranges.values())
    assert gate_range_parameters(models[base]) == {}


def mlp_parameters(config: MosaicBertConfig) -> int:
    return sum(p.numel() for p in MosaicBertMLP(config).parameters())


def test_parameter_counts_matched_and_unmatched():
    h, i = 768, 3072
    layer_norm = 2 * h
    plain = h * i + i + i * h + h + layer_norm
    base = MosaicBertConfig.from_preset("base")
    with torch.device("meta"):
        assert mlp_parameters(base) == 2 * h * i + i * h + h + layer_norm  # geglu, MosaicBERT
        for name, spec in FFN_ACTIVATIONS.items():
            matched = MosaicBertConfig.from_preset("base", ffn_activation=name,
                                                   ffn_param_matched=True)  # fmt: skip
            extra = 1 if spec.expanded else 0
            if spec.gated:
                assert matched.feed_forward_width == 2048  # 2/3 of 3072, a multiple of 64
                expected = 3 * h * 2048 + h + layer_norm + extra
            else:
                assert matched.feed_forward_width == i
                expected = plain + extra
            assert mlp_parameters(matched) == expected, name
    # Matched GLUs stay within 1% of the plain MLP they replace.
    assert abs(3 * h * 2048 - 2 * h * i) / (2 * h * i) < 0.01


def test_matched_width_rounds_to_a_multiple_of_64():
    assert feed_forward_width(1000, "swiglu", param_matched=True) == 640  # 666.7 -> 640
    assert feed_forward_width(1000, "gelu", param_matched=True) == 1000
    assert feed_forward_width(1000, "swiglu", param_matched=False) == 1000
    assert feed_forward_width(64, "geglu", param_matched=True) == 64


def test_an_unknown_activation_names_the_valid_ones():
    with pytest.raises(ConfigError, match="ffn_activation='swish' is unknown") as error:
        make_tiny_config(ffn_activation="swish")
    assert all(name in str(error.value) for name in FFN_ACTIVATION_CHOICES)
    with pytest.raises(ConfigError, match="ffn_param_matched must be true or false"):
        make_tiny_config(ffn_param_matched="yes")


@pytest.mark.parametrize("name", FFN_ACTIVATION_CHOICES)
def test_every_variant_runs_on_every_backend_padded_and_unpadded(name):
    """Each CPU backend agrees with eager, and a padded row equals the same row alone."""
    ids, mask = make_ids([11, 4, 7], 13)
    outputs = {}
    for backend in CPU_BACKENDS:
        torch.manual_seed(0)
        config = make_tiny_config(ffn_activation=name, attention_backend=backend)
        model = MosaicBertModel(config, add_pooling_layer=False).eval()
        with torch.no_grad():
            outputs[backend] = model(ids, attention_mask=mask).last_hidden_state
            alone = model(ids[1:2, :4], attention_mask=mask[1:2, :4]).last_hidden_state
        torch.testing.assert_close(outputs[backend][1, :4], alone[0], atol=1e-5, rtol=1e-5)
    for backend in CPU_BACKENDS:
        torch.testing.assert_close(outputs[backend], outputs["eager"], atol=1e-5, rtol=1e-5)


def test_gate_ranges_survive_save_and_reload_into_a_classifier(tmp_path):
    from transformers import AutoModelForMaskedLM

    from mosaic_pretrain.glue.start import load_classifier

    torch.manual_seed(0)
    model = MosaicBertForMaskedLM(make_tiny_config(ffn_activation="xatglu", ffn_param_matched=True))
    with torch.no_grad():
        for index, value in enumerate(gate_range_parameters(model).values()):
            value.fill_(0.1 * (index + 1))
    model.eval().save_pretrained(tmp_path)
    ids, mask = make_ids([6, 3], 8)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits,
                           reloaded(ids, attention_mask=mask).logits)  # fmt: skip
    classifier = load_classifier(str(tmp_path), num_labels=2, regression=False)  # GLUE's path
    assert isinstance(classifier, MosaicBertForSequenceClassification)
    ranges = [value.item() for value in gate_range_parameters(classifier).values()]
    assert ranges == pytest.approx([0.1, 0.2])


def test_gate_ranges_are_left_out_of_weight_decay_unless_asked():
    from mosaic_pretrain.config.schema import OptimizerSection
    from mosaic_pretrain.train.builders import build_optimizer

    model = MosaicBertForMaskedLM(make_tiny_config(ffn_activation="xgelu"))
    ranges = {id(value) for value in gate_range_parameters(model).values()}
    optimizer = build_optimizer(OptimizerSection(weight_decay=0.1), model)
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and undecayed["weight_decay"] == 0.0
    assert {id(value) for value in undecayed["params"]} == ranges
    assert len(decayed["params"]) + len(ranges) == len(list(model.parameters()))
    everything = build_optimizer(OptimizerSection(weight_decay_gate_ranges=True), model)
    assert len(everything.param_groups) == 1
    plain = build_optimizer(OptimizerSection(), MosaicBertForMaskedLM(make_tiny_config()))
    assert len(plain.param_groups) == 1
