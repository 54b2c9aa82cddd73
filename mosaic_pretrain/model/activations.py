"""Feed-forward activations: BERT's plain MLP, the GLU variants and expanded gating ranges.

A self-gated activation is `x * g(x)` with a gate `g` in [0, 1]: GELU (g = Phi, the normal CDF),
SiLU (g = sigmoid), ATLU (g = arctan(x) / pi + 1/2). The expanded form (Huang 2024, "Expanded
Gating Ranges Improve Activation Functions") stretches the gate to [-a, 1 + a] with one trainable
scalar `a` per MLP block:

    x * ((1 + 2a) g(x) - a)  =  f(x) + a (2 f(x) - x),   f(x) = x g(x)

so it is the unexpanded function exactly when a = 0, where it starts. The right-hand form reuses
torch's fused `gelu`/`silu` kernels instead of computing the gate separately.

Gated (GLU) variants (Shazeer 2020, "GLU Variants Improve Transformer") apply the activation to one
half of a doubled projection and multiply by the other half: `act(x W) * (x V)`. `bilinear` is the
GLU with no activation at all.

Every variant is one row of `FFN_ACTIVATIONS`; the config check, the model and the docs read it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def atlu(x: torch.Tensor) -> torch.Tensor:
    """ArcTan Linear Unit: x gated by arctan(x) / pi + 1/2, a gate in (0, 1)."""
    return x * (torch.atan(x) / math.pi + 0.5)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


# The base functions f(x); expandable ones are x * g(x) with g in [0, 1].
BASE_FUNCTIONS = {
    "gelu": F.gelu,  # exact (erf) GELU, as BERT and MosaicBERT
    "silu": F.silu,
    "atlu": atlu,
    "relu": F.relu,
    "linear": identity,
}
EXPANDABLE = ("gelu", "silu", "atlu")


@dataclass(frozen=True)
class FfnActivation:
    """One feed-forward variant: its base function, whether it is a GLU, whether it is expanded."""

    base: str
    gated: bool
    expanded: bool = False

    def __post_init__(self) -> None:
        if self.expanded and self.base not in EXPANDABLE:
            raise ValueError(f"{self.base} has no gate in [0, 1] to expand")


FFN_ACTIVATIONS: dict[str, FfnActivation] = {
    # Plain MLPs: W_o act(x W_i + b)
    "gelu": FfnActivation("gelu", gated=False),  # BERT
    "silu": FfnActivation("silu", gated=False),
    "atlu": FfnActivation("atlu", gated=False),
    "relu": FfnActivation("relu", gated=False),
    "xgelu": FfnActivation("gelu", gated=False, expanded=True),
    "xsilu": FfnActivation("silu", gated=False, expanded=True),
    "xatlu": FfnActivation("atlu", gated=False, expanded=True),
    # GLUs: W_o (act(x W) * x V)
    "geglu": FfnActivation("gelu", gated=True),  # MosaicBERT
    "swiglu": FfnActivation("silu", gated=True),
    "atglu": FfnActivation("atlu", gated=True),
    "reglu": FfnActivation("relu", gated=True),
    "bilinear": FfnActivation("linear", gated=True),
    "xgeglu": FfnActivation("gelu", gated=True, expanded=True),
    "xswiglu": FfnActivation("silu", gated=True, expanded=True),
    "xatglu": FfnActivation("atlu", gated=True, expanded=True),
}
FFN_ACTIVATION_CHOICES = tuple(FFN_ACTIVATIONS)

# Tensor cores work on tiles of 64: a parameter-matched GLU width is rounded to a multiple of it.
FFN_WIDTH_MULTIPLE = 64


def feed_forward_width(intermediate_size: int, activation: str, param_matched: bool) -> int:
    """Width of the activation's input (of each half, for a GLU).

    A GLU has three H x I matrices where a plain MLP has two, so with `param_matched` its width is
    2/3 of `intermediate_size` (rounded to a multiple of 64, at least 64): about the plain MLP's
    parameter count. Unmatched, a GLU uses `intermediate_size` per half, as MosaicBERT does.
    """
    if not (param_matched and FFN_ACTIVATIONS[activation].gated):
        return intermediate_size
    matched = round(2 * intermediate_size / 3 / FFN_WIDTH_MULTIPLE) * FFN_WIDTH_MULTIPLE
    return max(FFN_WIDTH_MULTIPLE, matched)


class Activation(nn.Module):
    """`f(x)`, or its expanded form `f(x) + a (2 f(x) - x)` with a trainable range `a`.

    `gate_range` (the paper's alpha) is a 0-d parameter initialised to 0, so a fresh expanded
    model computes exactly the unexpanded function. Its name ends in `gate_range` so the
    optimizer can leave it out of weight decay and the monitor can find it.
    """

    def __init__(self, name: str):
        super().__init__()
        spec = FFN_ACTIVATIONS[name]
        self.name = name
        self.base = BASE_FUNCTIONS[spec.base]
        self.gate_range = nn.Parameter(torch.zeros(())) if spec.expanded else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.base(x)
        if self.gate_range is None:
            return activated
        return activated + self.gate_range.to(x.dtype) * (2 * activated - x)

    def extra_repr(self) -> str:
        return self.name


GATE_RANGE_PARAMETER = "gate_range"


def gate_range_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable gate ranges of a model, by parameter name (empty for unexpanded models)."""
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if name.rsplit(".", 1)[-1] == GATE_RANGE_PARAMETER
    }
