"""The training-step benchmark's result rows and report: plain Python, no torch.

Kept apart from `training_step.py` so that the GPU check's parent process (`gpu_check.py`),
which must stay alive when torch, Composer or a carried wheel fails to import, can still write
the JSON and markdown of whatever its subprocesses measured, in the same format as
`scripts/benchmark.py`.
"""

from dataclasses import dataclass
from pathlib import Path

from mosaic_pretrain.bench.records import write_record


@dataclass
class StepResult:
    model: str
    backend: str
    compiled: bool
    microbatch: int
    step_ms: float | None  # median
    tokens_per_s: float | None  # real (non-padding) tokens
    mfu: float | None  # against the bf16 spec peak
    mfu_vs_matmul_ceiling: float | None
    peak_mem_gib: float | None
    step_ms_min: float | None = None
    real_tokens_per_step: float | None = None
    status: str = "ok"
    # MosaicBERT's BatchLayout: "host" = worked out before the step, as the Trainer does (no
    # host-device sync in the step); "inline" = found by the model inside the step.
    layout: str = "n/a"
    # The update the step times: Composer's DecoupledAdamW, or torch's AdamW where Composer
    # cannot be imported (same arithmetic per parameter, so nearly the same cost).
    optimizer: str = "decoupled_adamw"


def empty_result(
    model: str,
    backend: str,
    compiled: bool,
    microbatch: int,
    status: str,
    layout: str = "n/a",
    optimizer: str = "decoupled_adamw",
) -> StepResult:
    """A row for a configuration that measured nothing, saying why in `status`."""
    return StepResult(
        model=model,
        backend=backend,
        compiled=compiled,
        microbatch=microbatch,
        step_ms=None,
        tokens_per_s=None,
        mfu=None,
        mfu_vs_matmul_ceiling=None,
        peak_mem_gib=None,
        status=status,
        layout=layout,
        optimizer=optimizer,
    )


def fastest_backend(results: list[StepResult]) -> str:
    """MosaicBERT's fastest eager backend (host layout): the one the end-to-end run trains."""
    eager = [
        r
        for r in results
        if r.model == "mosaic_bert" and not r.compiled and r.layout == "host" and r.tokens_per_s
    ]
    return max(eager, key=lambda r: r.tokens_per_s).backend if eager else "sdpa"


def add_bare_step_ratio(end_to_end: dict, results: list[StepResult]) -> dict:
    """`end_to_end` with the bare step's tokens/s of the same configuration and the ratio."""
    bare = [
        r
        for r in results
        if r.model == "mosaic_bert"
        and r.backend == end_to_end["backend"]
        and r.compiled == end_to_end["compiled"]
        and r.layout == "host"
        and r.microbatch == end_to_end["microbatch"]
        and r.tokens_per_s
    ]
    if bare and end_to_end.get("tokens_per_s"):
        end_to_end["bare_step_tokens_per_s"] = bare[0].tokens_per_s
        end_to_end["ratio_to_bare_step"] = end_to_end["tokens_per_s"] / bare[0].tokens_per_s
    return end_to_end


def _number(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _percent(value) -> str:
    return _number(None if value is None else 100 * value, ".1f")


def _tflops(value) -> str:
    return _number(None if value is None else value / 1e12, ".1f") or "n/a"


def results_markdown(record: dict) -> str:
    fill = record.get("fill")
    optimizers = sorted({row.get("optimizer", "decoupled_adamw") for row in record["results"]})
    lines = [
        f"# Training step: MosaicBERT-{record['preset']} vs Hugging Face BERT, "
        f"sequence length {record['seq_len']}",
        "",
        f"Device: {record['device']}; driver {record['driver']}; torch {record['torch']} "
        f"(CUDA {record['cuda']}); triton {record['triton']}; {record['date']}; "
        f"{record['precision']}; optimizer {', '.join(optimizers) or 'n/a'}.",
        "",
        f"Data: {record['data']}; fill "
        f"{_number(None if fill is None else 100 * fill, '.1f') or 'n/a'}% of positions are "
        f"real tokens. Peaks: bf16 spec {_tflops(record['peak_bf16_flops'])} TFLOP/s, "
        f"measured matmul ceiling {_tflops(record['matmul_ceiling_flops'])} TFLOP/s.",
        "",
        "| model | backend | compiled | layout | microbatch | step ms (median) | real tokens/s "
        "| MFU (spec) | MFU (matmul ceiling) | peak GiB | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['compiled']} | {row['layout']} | "
            f"{row['microbatch']} | "
            f"{_number(row['step_ms'], '.1f')} | {_number(row['tokens_per_s'], ',.0f')} | "
            f"{_percent(row['mfu'])} | {_percent(row['mfu_vs_matmul_ceiling'])} | "
            f"{_number(row['peak_mem_gib'], '.2f')} | {row['status']} |"
        )
    if record.get("largest_microbatch"):
        lines += [
            "",
            "Largest microbatch that fits: "
            + ", ".join(f"{key} {value}" for key, value in record["largest_microbatch"].items()),
        ]
    if "end_to_end" in record:
        lines += ["", _end_to_end_line(record["end_to_end"])]
    return "\n".join(lines) + "\n"


def _end_to_end_line(e2e: dict) -> str:
    if e2e.get("tokens_per_s") is None:
        return f"End to end (`mosaic-pretrain train`): {e2e.get('status', 'not measured')}."
    ratio = e2e.get("ratio_to_bare_step")
    compiled = ", compiled" if e2e.get("compiled") else ""
    return (
        f"End to end (`mosaic-pretrain train`, {e2e['backend']}{compiled}, microbatch "
        f"{e2e['microbatch']}, {e2e['dataloader_workers']} loader workers): "
        f"{e2e['tokens_per_s']:,.0f} real tokens/s"
        + (f", {100 * ratio:.0f}% of the bare step." if ratio else ".")
    )


def write_results(record: dict, out: Path) -> tuple[Path, Path]:
    return write_record(record, out, results_markdown(record))
