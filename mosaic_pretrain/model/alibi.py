"""ALiBi: attention with linear biases (Press et al., 2022), symmetric for an encoder.

Every head h adds `-slope_h * |i - j|` to the score of query i and key j. Nothing about positions
is learned, so a model trained on 128 tokens runs on any length: the bias is computed from the
lengths actually seen, never read from a table of fixed size in the weights.
"""

import math

import torch


def _power_of_two_slopes(num_heads: int) -> list[float]:
    # The geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8): head n gets the gentlest slope 1/256.
    first = 2.0 ** (-8.0 / num_heads)
    return [first ** (head + 1) for head in range(num_heads)]


def alibi_slopes(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-head slopes, shape (num_heads,), float32, for any head count, on `device`.

    For a power of two this is the paper's geometric sequence. Otherwise the paper's recipe: the
    slopes of the largest power of two below `num_heads`, then every other slope of twice that
    many heads, which interleaves new slopes between the existing ones.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    lower_power = 2 ** math.floor(math.log2(num_heads))
    slopes = _power_of_two_slopes(lower_power)
    if lower_power != num_heads:
        slopes += _power_of_two_slopes(2 * lower_power)[0::2][: num_heads - lower_power]
    return torch.tensor(slopes, dtype=torch.float32, device=device)


def alibi_bias(slopes: torch.Tensor, length: int) -> torch.Tensor:
    """The bias `-slope_h * |i - j|` for `length` positions: (heads, length, length), float32."""
    positions = torch.arange(length, device=slopes.device)
    distance = (positions[:, None] - positions[None, :]).abs().to(torch.float32)  # (L, L)
    return -slopes.to(torch.float32)[:, None, None] * distance
