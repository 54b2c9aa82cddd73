"""Training-step speed of MosaicBERT beside the Hugging Face BERT baseline, on the same batches.

Batches: each row is one document of the shipped public-domain corpus, by default cut into
**paragraphs** (a paragraph = a document; tokenized with bert-base-uncased, [CLS] ... [SEP],
truncated to the sequence length), read through our MDS dataset and masked 30% by our MLM
collator, so rows have the uneven lengths of real short documents rather than all being full
(`rows=documents` keeps the shipped chapter-sized documents: nearly all rows full, the case
where unpadding saves least). The fill (real tokens / padded positions) is reported with the
results. Every configuration steps through the same batches, in the same order.

A step is what training does: forward under bf16 autocast (fp32 on the CPU), backward, the
decoupled AdamW update and zeroing the gradients. On CUDA it is timed with CUDA events after
warm-up and the median of many steps is reported; on the CPU (a check that the harness runs) with
the wall clock.

MFU = (FLOPs the step must do) / step time / peak. The FLOPs are those of
`mosaic_pretrain.train.flops.training_flops`, the same for both models' shapes: 3 x forward
(backward = 2 x forward), where the forward counts the matmuls on real tokens only
(24 H^2 + ... per token and layer: 8 H^2 for the attention projections, 6 H I for GeGLU or 4 H I
for BERT's MLP), 4 H per pair of tokens attending within a document, and the MLM head on masked
tokens only (2 H^2 + 2 H V each). Padding, the dense head of the baseline and the optimizer are
not counted: work a model does on padding is wasted work. Two peaks: the device's bf16 dense
spec (Composer's table) and a bf16 matmul ceiling measured here (a large square GEMM).

The end-to-end number runs the real `train` path (recipe -> Composer Trainer -> streaming data
loader -> model) on the same data and reports Composer's SpeedMonitor real tokens/s.
"""

import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mosaic_pretrain.bench.timing import device_description, time_steps
from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.convert import MANIFEST, ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset, build_mlm_dataloader
from mosaic_pretrain.data.sources import SourceOptions
from mosaic_pretrain.data.tokenizer import DEFAULT_CORPUS, load_tokenizer, model_config_for
from mosaic_pretrain.model import MosaicBertForMaskedLM, hf_bert_for_masked_lm
from mosaic_pretrain.model.attention import backend_unavailable_reason
from mosaic_pretrain.model.padding import BatchLayout
from mosaic_pretrain.train.flops import training_flops

MODELS = ("mosaic_bert", "hf_bert")
MLM_PROBABILITY = 0.3
MASK_SEED = 0
ROW_KINDS = {
    "paragraphs": "shipped public-domain corpus, one paragraph per row",
    "documents": "shipped public-domain corpus, one chapter-sized document per row",
}


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


def write_benchmark_corpus(folder: Path, rows: str, max_documents: int | None = None) -> Path:
    """The shipped corpus as pre-tokenized MDS in `folder/ROWS`, converted once: one paragraph
    per document (`paragraphs`: many short rows) or as shipped (`documents`: chapters, so
    nearly every row of 128 tokens is full)."""
    if rows not in ROW_KINDS:
        raise ValueError(f"rows={rows!r}: choose one of {', '.join(ROW_KINDS)}")
    mds = folder / rows
    if (mds / MANIFEST).exists():
        return mds
    source = str(DEFAULT_CORPUS)
    if rows == "paragraphs":
        import lzma

        folder.mkdir(parents=True, exist_ok=True)
        text = folder / "paragraphs.txt"
        with lzma.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as corpus, text.open("w") as out:
            for line in corpus:
                for paragraph in json.loads(line)["text"].split("\n"):
                    if paragraph.strip():
                        out.write(paragraph.strip() + "\n\n")
        source = str(text)
    options = ConvertOptions(
        sources=(source,),
        output_format="tokens",
        max_documents=max_documents,
        source_options=SourceOptions(txt_split="paragraphs"),
    )
    convert(options, mds, progress=False, log=lambda _: None)
    return mds


def sample_pool(mds: Path, rows: int, seq_len: int) -> dict[str, torch.Tensor]:
    """`rows` collated MLM rows (shuffled documents, 30% masking), to cut batches from."""
    tokenizer = load_tokenizer("bert-base-uncased")
    chunk = min(rows, 256)
    dataset = MLMStreamingDataset(
        local=str(mds),
        split="train",
        tokenizer=tokenizer,
        max_seq_len=seq_len,
        shuffle=True,
        shuffle_seed=MASK_SEED,
        batch_size=chunk,
    )
    collator = MLMCollator(tokenizer, MLM_PROBABILITY, seq_len, seed=MASK_SEED)
    loader = build_mlm_dataloader(dataset, collator, chunk, num_workers=0, drop_last=True)
    parts: list[dict] = []
    collected = 0
    while collected < rows:  # passes over the data until enough rows
        collected_before = collected
        for batch in loader:
            parts.append(batch)
            collected += len(batch["input_ids"])
            if collected >= rows:
                break
        if collected == collected_before:
            raise ValueError(f"{mds} holds fewer than {chunk} documents")
    names = ("input_ids", "attention_mask", "token_type_ids", "labels")
    return {name: torch.cat([part[name] for part in parts])[:rows] for name in names}


def batches_from_pool(pool: dict, microbatch: int, count: int) -> list[dict]:
    """`count` batches of `microbatch` consecutive rows, wrapping around the pool."""
    total = len(pool["input_ids"])
    batches = []
    for number in range(count):
        index = (torch.arange(microbatch) + number * microbatch) % total
        batches.append({name: tensor[index] for name, tensor in pool.items()})
    return batches


def bf16_peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 spec peak from Composer's table; None when unknown (or CPU)."""
    if device.type != "cuda":
        return None
    from composer.callbacks.speed_monitor import GPU_AVAILABLE_FLOPS

    name = torch.cuda.get_device_name(device).lower()
    if "h200" in name:
        key = "h200-sxm"
    elif "h100" in name:
        key = "h100-pcie" if ("pcie" in name or "hbm2e" in name) else "h100-sxm"
    elif "a100" in name:
        key = "a100"
    else:
        return None
    return float(GPU_AVAILABLE_FLOPS[key]["bf16"])


def matmul_ceiling_flops(device: torch.device, size: int | None = None, repeats: int = 20) -> float:
    """FLOP/s of a large square matmul in the benchmark's dtype: what this device really does."""
    size = size or (8192 if device.type == "cuda" else 1024)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = time_steps(lambda _: torch.mm(a, b), repeats, 3, device)
    return 2 * size**3 / (statistics.median(times) / 1000)


def build_model(name: str, backend: str, preset: str, overrides: dict) -> torch.nn.Module:
    tokenizer = load_tokenizer("bert-base-uncased")
    if name == "hf_bert":
        return hf_bert_for_masked_lm(model_config_for(tokenizer, preset, **overrides))
    config = model_config_for(tokenizer, preset, attention_backend=backend, **overrides)
    return MosaicBertForMaskedLM(config)


def with_host_layouts(batches: list[dict], device: torch.device) -> list[dict]:
    """Each batch with its BatchLayout worked out on the host and copied to `device`, as the
    Trainer does for every microbatch (train/microbatches.py)."""
    return [
        {
            **batch,
            "layout": BatchLayout.of(batch["attention_mask"].cpu(), batch["labels"].cpu()).to(
                device
            ),
        }
        for batch in batches
    ]


def _training_step(model, optimizer, batches: list[dict], device: torch.device):
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(number: int) -> None:
        batch = batches[number % len(batches)]
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(
    name: str,
    backend: str,
    compiled: bool,
    batches: list[dict],
    device: torch.device,
    steps: int,
    warmup: int,
    peaks: tuple[float | None, float],
    preset: str = "base",
    overrides: dict | None = None,
    compile_backend: str = "inductor",
    layout: str = "host",
) -> StepResult:
    """One configuration on `batches` (already on `device`)."""
    from composer.optim import DecoupledAdamW

    microbatch = len(batches[0]["input_ids"])
    layout = layout if name == "mosaic_bert" else "n/a"
    shape = dict(
        model=name, backend=backend, compiled=compiled, microbatch=microbatch, layout=layout
    )
    reason = backend_unavailable_reason(backend) if name == "mosaic_bert" else None
    if reason is not None:
        return StepResult(**shape, **_empty(), status=f"skipped: {reason}")
    torch.manual_seed(0)
    model = build_model(name, backend, preset, overrides or {}).to(device).train()
    flops = [training_flops(model.config, batch) for batch in batches]
    tokens = [int(batch["attention_mask"].ne(0).sum()) for batch in batches]
    runnable = torch.compile(model, backend=compile_backend) if compiled else model
    if layout == "host":
        batches = with_host_layouts(batches, device)
    optimizer = DecoupledAdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        times = time_steps(
            _training_step(runnable, optimizer, batches, device), steps, warmup, device
        )
    except torch.cuda.OutOfMemoryError:
        return StepResult(**shape, **_empty(), status="out of memory")
    finally:
        peak_mem = (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        )
        del runnable, model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # Each timed step i used batch (warmup + i) % len(batches): average its work and tokens.
    used = [(warmup + i) % len(batches) for i in range(steps)]
    step_s = statistics.median(times) / 1000
    mean_flops = statistics.mean(flops[i] for i in used)
    mean_tokens = statistics.mean(tokens[i] for i in used)
    spec_peak, ceiling = peaks
    return StepResult(
        **shape,
        step_ms=step_s * 1000,
        tokens_per_s=mean_tokens / step_s,
        mfu=mean_flops / step_s / spec_peak if spec_peak else None,
        mfu_vs_matmul_ceiling=mean_flops / step_s / ceiling,
        peak_mem_gib=peak_mem,
        step_ms_min=min(times),
        real_tokens_per_step=mean_tokens,
    )


def _empty() -> dict:
    return dict(
        step_ms=None, tokens_per_s=None, mfu=None, mfu_vs_matmul_ceiling=None, peak_mem_gib=None
    )


def largest_microbatch(
    name: str,
    backend: str,
    compiled: bool,
    pool: dict,
    device: torch.device,
    start: int,
    limit: int,
    **model_options,
) -> int | None:
    """The largest microbatch (doubling from `start`, at most `limit`) whose step fits in
    memory; None on the CPU, where memory is not the limit that matters."""
    if device.type != "cuda":
        return None
    fits = None
    microbatch = start
    while microbatch <= limit:
        batches = [
            {k: v.to(device) for k, v in b.items()} for b in batches_from_pool(pool, microbatch, 2)
        ]
        result = measure(
            name, backend, compiled, batches, device, 1, 1, (None, 1.0), **model_options
        )
        del batches
        if result.status != "ok":
            break
        fits = microbatch
        microbatch *= 2
    return fits


def end_to_end(
    mds: Path,
    preset: str,
    backend: str,
    microbatch: int,
    seq_len: int,
    batches: int,
    window: int,
    device: torch.device,
    compiled: bool = False,
    num_workers: int = 0,
    overrides: dict | None = None,
) -> dict:
    """Real tokens/s of `mosaic-pretrain train` (Composer Trainer, streaming loader) on `mds`."""
    import yaml

    from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.train.run import train

    with tempfile.TemporaryDirectory() as scratch:
        recipe = {
            "run_name": "benchmark-end-to-end",
            "precision": "amp_bf16" if device.type == "cuda" else "fp32",
            "max_seq_len": seq_len,
            "model": {
                "name": "mosaic_bert",
                "model_config": {
                    "preset": preset,
                    "attention_backend": backend,
                    **(overrides or {}),
                },
            },
            "train_loader": {
                "dataset": {"local": str(mds), "split": "train", "shuffle": True},
                "num_workers": num_workers,
            },
            "max_duration": f"{batches}ba",
            "global_train_batch_size": microbatch,
            "device_train_microbatch_size": microbatch,
            "save_folder": f"{scratch}/run",
            "save_interval": f"{batches}ba",
            "log_to_console": False,
            "callbacks": {"speed_monitor": {"window_size": window}},
            **({"compile": {}} if compiled else {}),
        }
        path = Path(scratch) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        trainer = train(load_config(path))
        trainer.close()
        series = read_metrics(Path(scratch) / "run" / METRICS_FILE)["throughput/tokens_per_sec"]
    return {
        "model": "mosaic_bert",
        "backend": backend,
        "compiled": compiled,
        "microbatch": microbatch,
        "batches": batches,
        "window": window,
        "tokens_per_s": series[max(series)],  # the last window: warm-up excluded
        "dataloader_workers": num_workers,
    }


@dataclass
class BenchmarkPlan:
    device: str = "cuda"
    preset: str = "base"
    seq_len: int = 128
    microbatch: int = 256
    steps: int = 30
    warmup: int = 10
    batches: int = 16  # distinct batches cycled through
    models: tuple[str, ...] = MODELS
    backends: tuple[str, ...] = ("sdpa", "flex", "flash_attn")
    compiled: tuple[bool, ...] = (False, True)
    compile_backend: str = "inductor"
    compare_inline_layout: bool = False  # also MosaicBERT finding its tokens inside the step
    find_largest_microbatch: bool = True
    largest_microbatch_limit: int = 4096
    end_to_end_batches: int = 60  # 0: skip the Trainer run
    end_to_end_workers: int = 2
    rows: str = "paragraphs"  # or documents (see write_benchmark_corpus)
    data_folder: str = "runs/benchmark-data"
    max_documents: int | None = None
    model_overrides: dict | None = None


def run_benchmark(plan: BenchmarkPlan) -> dict:
    device = torch.device(plan.device)
    mds = write_benchmark_corpus(Path(plan.data_folder), plan.rows, plan.max_documents)
    pool_rows = max(plan.microbatch * plan.batches, plan.largest_microbatch_limit * 2)
    if not plan.find_largest_microbatch or device.type != "cuda":
        pool_rows = plan.microbatch * plan.batches
    pool = sample_pool(mds, pool_rows, plan.seq_len)
    ceiling = matmul_ceiling_flops(device)
    peaks = (bf16_peak_flops(device), ceiling)
    options = dict(
        preset=plan.preset, overrides=plan.model_overrides, compile_backend=plan.compile_backend
    )
    layouts = ("host", "inline") if plan.compare_inline_layout else ("host",)
    configurations = [
        (model, backend, compiled, layout)
        for model in plan.models
        for backend in (plan.backends if model == "mosaic_bert" else ("sdpa",))
        for compiled in plan.compiled
        for layout in (layouts if model == "mosaic_bert" else ("n/a",))
    ]
    results = []
    largest = {}
    for model, backend, compiled, layout in configurations:
        sizes = [plan.microbatch]
        if plan.find_largest_microbatch and device.type == "cuda" and layout != "inline":
            fits = largest_microbatch(
                model,
                backend,
                compiled,
                pool,
                device,
                plan.microbatch,
                plan.largest_microbatch_limit,
                **options,
            )
            largest[f"{model}/{backend}/{'compiled' if compiled else 'eager'}"] = fits
            if fits and fits != plan.microbatch:
                sizes.append(fits)
        for microbatch in sizes:
            batches = [
                {name: tensor.to(device) for name, tensor in batch.items()}
                for batch in batches_from_pool(pool, microbatch, plan.batches)
            ]
            results.append(
                measure(
                    model,
                    backend,
                    compiled,
                    batches,
                    device,
                    plan.steps,
                    plan.warmup,
                    peaks,
                    layout=layout,
                    **options,
                )
            )
            del batches
    record = {
        **device_description(device),
        "precision": "amp_bf16" if device.type == "cuda" else "fp32",
        "preset": plan.preset,
        "seq_len": plan.seq_len,
        "data": f"{ROW_KINDS[plan.rows]} (bert-base-uncased, truncated), 30% masked",
        "fill": float(pool["attention_mask"].ne(0).float().mean()),
        "masked_fraction_of_real_tokens": float(
            pool["labels"].ne(-100).sum() / pool["attention_mask"].ne(0).sum()
        ),
        "peak_bf16_flops": peaks[0],
        "matmul_ceiling_flops": ceiling,
        "largest_microbatch": largest,
        "plan": asdict(plan),
        "results": [asdict(result) for result in results],
    }
    if plan.end_to_end_batches:
        backend = _fastest_backend(results)
        record["end_to_end"] = end_to_end(
            mds,
            plan.preset,
            backend,
            plan.microbatch,
            plan.seq_len,
            plan.end_to_end_batches,
            max(1, plan.end_to_end_batches // 3),
            device,
            num_workers=plan.end_to_end_workers,
            overrides=plan.model_overrides,
        )
        bare = [
            r
            for r in results
            if r.model == "mosaic_bert"
            and r.backend == backend
            and not r.compiled
            and r.layout == "host"
            and r.microbatch == plan.microbatch
            and r.tokens_per_s
        ]
        if bare:
            record["end_to_end"]["bare_step_tokens_per_s"] = bare[0].tokens_per_s
            record["end_to_end"]["ratio_to_bare_step"] = (
                record["end_to_end"]["tokens_per_s"] / bare[0].tokens_per_s
            )
    return record


def _fastest_backend(results: list[StepResult]) -> str:
    eager = [
        r
        for r in results
        if r.model == "mosaic_bert" and not r.compiled and r.layout == "host" and r.tokens_per_s
    ]
    return max(eager, key=lambda r: r.tokens_per_s).backend if eager else "sdpa"


def _number(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _percent(value) -> str:
    return _number(None if value is None else 100 * value, ".1f")


def results_markdown(record: dict) -> str:
    spec_peak = record["peak_bf16_flops"]
    lines = [
        f"# Training step: MosaicBERT-{record['preset']} vs Hugging Face BERT, "
        f"sequence length {record['seq_len']}",
        "",
        f"Device: {record['device']}; driver {record['driver']}; torch {record['torch']} "
        f"(CUDA {record['cuda']}); triton {record['triton']}; {record['date']}; "
        f"{record['precision']}.",
        "",
        f"Data: {record['data']}; fill {100 * record['fill']:.1f}% of positions are real tokens. "
        f"Peaks: bf16 spec {_number(spec_peak and spec_peak / 1e12, '.1f') or 'n/a'} TFLOP/s, "
        f"measured matmul ceiling {record['matmul_ceiling_flops'] / 1e12:.1f} TFLOP/s.",
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
        e2e = record["end_to_end"]
        ratio = e2e.get("ratio_to_bare_step")
        lines += [
            "",
            f"End to end (`mosaic-pretrain train`, {e2e['backend']}, microbatch "
            f"{e2e['microbatch']}, {e2e['dataloader_workers']} loader workers): "
            f"{e2e['tokens_per_s']:,.0f} real tokens/s"
            + (f", {100 * ratio:.0f}% of the bare step." if ratio else "."),
        ]
    return "\n".join(lines) + "\n"


def write_results(record: dict, out: Path) -> tuple[Path, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    markdown_path.write_text(results_markdown(record))
    return json_path, markdown_path
