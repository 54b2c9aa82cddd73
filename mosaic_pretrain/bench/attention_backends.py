"""Forward+backward time of MosaicBERT per attention backend, with bf16 agreement to eager.

On CUDA it times with CUDA events after warm-up and reports the median of many steps; on CPU it
uses the wall clock (useful only to check the script runs). Rows are drawn with random lengths
so unpadding has real padding to skip; the number of real tokens is reported with each result.
"""

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mosaic_pretrain.bench.timing import time_steps
from mosaic_pretrain.device_info import device_description
from mosaic_pretrain.model import MosaicBertConfig, MosaicBertForMaskedLM
from mosaic_pretrain.model.attention import ATTENTION_BACKENDS, backend_unavailable_reason
from mosaic_pretrain.smoke import synthetic_mlm_batch


@dataclass
class BackendTiming:
    backend: str
    compiled: bool
    microbatch: int
    seq_len: int
    real_tokens: int
    step_ms_median: float
    step_ms_min: float
    tokens_per_s: float
    peak_mem_gib: float | None
    max_abs_logit_diff_vs_eager_fp32: float | None
    status: str


def time_backend(
    config: MosaicBertConfig,
    backend: str,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    steps: int,
    warmup: int,
    reference_logits: torch.Tensor | None,
) -> BackendTiming:
    """One backend: bf16 autocast on CUDA (float32 on CPU), forward + backward per step."""
    microbatch, seq_len = batch["input_ids"].shape
    real_tokens = int(batch["attention_mask"].ne(0).sum())
    shape = dict(
        backend=backend,
        compiled=backend == "flex" and device.type == "cuda",
        microbatch=microbatch,
        seq_len=seq_len,
        real_tokens=real_tokens,
    )
    if (reason := backend_unavailable_reason(backend)) is not None:
        nan = float("nan")
        return BackendTiming(
            **shape,
            step_ms_median=nan,
            step_ms_min=nan,
            tokens_per_s=nan,
            peak_mem_gib=None,
            max_abs_logit_diff_vs_eager_fp32=None,
            status=f"skipped: {reason}",
        )
    torch.manual_seed(0)
    model = MosaicBertForMaskedLM(
        MosaicBertConfig(**{**config.to_diff_dict(), "attention_backend": backend})
    ).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(lambda _: step(), steps, warmup, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    difference = None
    if reference_logits is not None:
        with torch.no_grad(), autocast:
            logits = model(**batch).logits.float()
        difference = float((logits - reference_logits).abs().max())
    median = statistics.median(times)
    return BackendTiming(
        **shape,
        step_ms_median=median,
        step_ms_min=min(times),
        tokens_per_s=real_tokens / (median / 1000),
        peak_mem_gib=peak,
        max_abs_logit_diff_vs_eager_fp32=difference,
        status="ok",
    )


def run_attention_benchmark(
    preset: str = "base",
    microbatch: int = 256,
    seq_len: int = 128,
    steps: int = 20,
    warmup: int = 5,
    device: str = "cuda",
    backends: list[str] | None = None,
    config_overrides: dict | None = None,
) -> dict:
    """Time every backend on one batch; returns a JSON-ready record with device and versions."""
    device_ = torch.device(device)
    config = MosaicBertConfig.from_preset(
        preset, hidden_dropout_prob=0.0, **(config_overrides or {})
    )
    batch = synthetic_mlm_batch(microbatch, seq_len, config.vocab_size, 0.3, seed=0)
    batch = {name: tensor.to(device_) for name, tensor in batch.items()}
    torch.manual_seed(0)
    reference = MosaicBertForMaskedLM(
        MosaicBertConfig(**{**config.to_diff_dict(), "attention_backend": "eager"})
    ).to(device_)
    with torch.no_grad():
        reference_logits = reference(**batch).logits.float()
    del reference
    results = [
        time_backend(config, name, batch, device_, steps, warmup, reference_logits)
        for name in (backends or list(ATTENTION_BACKENDS))
    ]
    return {
        **device_description(device_),
        "model": f"MosaicBERT-{preset}",
        "precision": "amp_bf16" if device_.type == "cuda" else "fp32",
        "note": "median of forward+backward steps; agreement is max |logit - eager fp32 logit|",
        "results": [asdict(result) for result in results],
    }


def write_results(record: dict, json_path: Path, markdown_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# Attention backends: {record['model']}, {record['precision']}",
        "",
        f"Device: {record['device']}; torch {record['torch']} (CUDA {record['cuda']}); "
        f"{record['date']}.",
        "",
        "| backend | compiled | microbatch x seq | real tokens | step ms (median) | tokens/s | "
        "peak GiB | max logit diff vs eager fp32 | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in record["results"]:
        peak = "" if row["peak_mem_gib"] is None else f"{row['peak_mem_gib']:.2f}"
        diff = row["max_abs_logit_diff_vs_eager_fp32"]
        lines.append(
            f"| {row['backend']} | {row['compiled']} | {row['microbatch']}x{row['seq_len']} | "
            f"{row['real_tokens']} | {row['step_ms_median']:.1f} | {row['tokens_per_s']:,.0f} | "
            f"{peak} | {'' if diff is None else f'{diff:.3g}'} | {row['status']} |"
        )
    markdown_path.write_text("\n".join(lines) + "\n")
