"""A forward/backward smoke run of MosaicBERT: proves an install can train the model.

It overfits one fixed synthetic MLM batch (random token documents of random lengths, padded,
30% masked) for a few optimizer steps and fails unless the loss falls. Real pretraining from a
recipe is `mosaic-pretrain train`; this needs no data and no download.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import MosaicBertConfig, MosaicBertForMaskedLM
from mosaic_pretrain.model.padding import IGNORE_INDEX

PRECISIONS = ("fp32", "amp_bf16")
MASK_TOKEN_ID = 103  # [MASK] in the bert-base-uncased vocabulary
FIRST_WORD_ID = 1000  # ids below this are special or unused tokens in that vocabulary


@dataclass
class SmokeResult:
    backend: str
    parameters: int
    first_loss: float
    last_loss: float
    median_step_ms: float


def synthetic_mlm_batch(
    batch_size: int, seq_len: int, vocab_size: int, mask_probability: float, seed: int
) -> dict[str, torch.Tensor]:
    """Random documents of random lengths (a quarter to all of `seq_len`), right-padded."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(seq_len // 4, 2), seq_len + 1, (batch_size,), generator=generator)
    attention_mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    tokens = torch.randint(FIRST_WORD_ID, vocab_size, (batch_size, seq_len), generator=generator)
    tokens = tokens * attention_mask
    masked = torch.rand(batch_size, seq_len, generator=generator) < mask_probability
    masked &= attention_mask.bool()
    labels = torch.where(masked, tokens, torch.full_like(tokens, IGNORE_INDEX))
    input_ids = torch.where(masked, torch.full_like(tokens, MASK_TOKEN_ID), tokens)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def run_smoke(
    preset: str = "mini",
    steps: int = 20,
    batch_size: int = 16,
    seq_len: int = 128,
    attention_backend: str = "auto",
    device: str = "cpu",
    precision: str = "fp32",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> SmokeResult:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision={precision!r} is unknown; choose one of {', '.join(PRECISIONS)}"
        )
    if steps < 2:
        raise ConfigError(f"steps must be at least 2 to see the loss move, got {steps}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device; use device='cpu'")
    torch.manual_seed(seed)
    config = MosaicBertConfig.from_preset(
        preset, attention_backend=attention_backend, hidden_dropout_prob=0.0
    )
    model = MosaicBertForMaskedLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    batch = synthetic_mlm_batch(batch_size, seq_len, config.vocab_size, 0.3, seed)
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    parameters = sum(p.numel() for p in model.parameters())
    log(f"MosaicBERT-{preset}: {parameters:,} parameters, batch {batch_size}x{seq_len} on {device}")

    losses, step_ms = [], []
    for step in range(steps):
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "amp_bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step_ms.append((time.perf_counter() - started) * 1000)
        if step == 0 or (step + 1) % 5 == 0 or step + 1 == steps:
            log(f"step {step + 1:>4}/{steps}  mlm loss {losses[-1]:.4f}  {step_ms[-1]:.0f} ms")

    backend = model.bert.attention_backend_in_use
    result = SmokeResult(
        backend, parameters, losses[0], losses[-1], sorted(step_ms)[len(step_ms) // 2]
    )
    if not result.last_loss < result.first_loss:
        raise RuntimeError(
            f"smoke run failed: MLM loss did not fall ({result.first_loss:.4f} -> "
            f"{result.last_loss:.4f}) with the {backend} backend"
        )
    log(
        f"OK: attention backend {backend}; MLM loss {result.first_loss:.4f} -> "
        f"{result.last_loss:.4f}; median step {result.median_step_ms:.0f} ms"
    )
    return result
