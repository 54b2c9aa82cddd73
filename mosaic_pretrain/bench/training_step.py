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

from mosaic_pretrain.bench.step_results import (
    StepResult,
    add_bare_step_ratio,
    empty_result,
    fastest_backend,
)
from mosaic_pretrain.bench.timing import time_steps
from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.convert import MANIFEST, ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset, build_mlm_dataloader
from mosaic_pretrain.data.sources import SourceOptions
from mosaic_pretrain.data.tokenizer import DEFAULT_CORPUS, load_tokenizer, model_config_for
from mosaic_pretrain.device_info import device_description
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
    dataset.release_shared_memory()
    names = ("input_ids", "attention_mask", "token_type_ids", "labels")
    return {name: torch.cat([part[name] for part in parts])[:rows] for name in names}


def pool_description(pool: dict[str, torch.Tensor], rows: str) -> dict:
    """The data lines of a result's header: what the rows are, their fill, the masked share."""
    real = pool["attention_mask"].ne(0)
    return {
        "data": f"{ROW_KINDS[rows]} (bert-base-uncased, truncated), 30% masked",
        "fill": float(real.float().mean()),
        "masked_fraction_of_real_tokens": float(pool["labels"].ne(-100).sum() / real.sum()),
    }


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
    try:
        from composer.callbacks.speed_monitor import GPU_AVAILABLE_FLOPS
    except Exception:  # Composer refusing this torch can fail in any way; MFU (spec) is then n/a
        return None

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


# The update each step times. Composer's DecoupledAdamW is what training uses; torch's AdamW (the
# same per-parameter arithmetic, decay not scaled by the learning rate) stands in where Composer
# cannot be imported, e.g. on a machine whose torch is newer than Composer's pin.
OPTIMIZERS = ("decoupled_adamw", "adamw")


def make_optimizer(name: str, parameters) -> torch.optim.Optimizer:
    options = dict(lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    if name == "decoupled_adamw":
        from composer.optim import DecoupledAdamW

        return DecoupledAdamW(parameters, **options)
    if name == "adamw":
        return torch.optim.AdamW(parameters, **options)
    raise ValueError(f"optimizer={name!r}: choose one of {', '.join(OPTIMIZERS)}")


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
    peaks: tuple[float | None, float | None],
    preset: str = "base",
    overrides: dict | None = None,
    compile_backend: str = "inductor",
    layout: str = "host",
    optimizer: str = "decoupled_adamw",
) -> StepResult:
    """One configuration on `batches` (already on `device`)."""
    microbatch = len(batches[0]["input_ids"])
    layout = layout if name == "mosaic_bert" else "n/a"
    shape = dict(
        model=name, backend=backend, compiled=compiled, microbatch=microbatch, layout=layout
    )
    reason = backend_unavailable_reason(backend) if name == "mosaic_bert" else None
    if reason is not None:
        return empty_result(**shape, status=f"skipped: {reason}", optimizer=optimizer)
    torch.manual_seed(0)
    model = build_model(name, backend, preset, overrides or {}).to(device).train()
    flops = [training_flops(model.config, batch) for batch in batches]
    tokens = [int(batch["attention_mask"].ne(0).sum()) for batch in batches]
    # As `train` compiles (builders.build_compile_config): MosaicBERT's unpadded sizes change
    # every batch, so it is compiled for dynamic sizes at once; the padded baseline as torch likes.
    dynamic = True if name == "mosaic_bert" else None
    runnable = torch.compile(model, backend=compile_backend, dynamic=dynamic) if compiled else model
    if layout == "host":
        batches = with_host_layouts(batches, device)
    optimizer_name, optimizer = optimizer, make_optimizer(optimizer, model.parameters())
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        times = time_steps(
            _training_step(runnable, optimizer, batches, device), steps, warmup, device
        )
    except torch.cuda.OutOfMemoryError:
        return empty_result(**shape, status="out of memory", optimizer=optimizer_name)
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
        mfu_vs_matmul_ceiling=mean_flops / step_s / ceiling if ceiling else None,
        peak_mem_gib=peak_mem,
        step_ms_min=min(times),
        real_tokens_per_step=mean_tokens,
        optimizer=optimizer_name,
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


def end_to_end_recipe(
    mds: Path,
    preset: str,
    backend: str,
    microbatch: int,
    seq_len: int,
    batches: int,
    window: int,
    device: torch.device,
    save_folder: Path,
    compiled: bool = False,
    num_workers: int = 0,
    overrides: dict | None = None,
) -> dict:
    """A `mosaic-pretrain train` recipe: MosaicBERT on `mds` for `batches` batches, with
    Composer's SpeedMonitor averaging over `window` batches and one checkpoint at the end."""
    return {
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
        "save_folder": str(save_folder),
        "save_interval": f"{batches}ba",
        "log_to_console": False,
        "callbacks": {"speed_monitor": {"window_size": window}},
        **({"compile": {}} if compiled else {}),
    }


def end_to_end_summary(recipe: dict) -> dict:
    """What a finished run of `recipe` measured: SpeedMonitor's real tokens/s over the last
    window (warm-up excluded), read from the metrics file in its save folder."""
    from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics

    metrics = read_metrics(Path(recipe["save_folder"]) / METRICS_FILE)
    series = metrics["throughput/tokens_per_sec"]
    return {
        "model": "mosaic_bert",
        "backend": recipe["model"]["model_config"]["attention_backend"],
        "compiled": "compile" in recipe,
        "microbatch": recipe["global_train_batch_size"],
        "batches": int(recipe["max_duration"].removesuffix("ba")),
        "window": recipe["callbacks"]["speed_monitor"]["window_size"],
        "tokens_per_s": series[max(series)],
        "dataloader_workers": recipe["train_loader"]["num_workers"],
    }


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
    """Real tokens/s of `mosaic-pretrain train` (Composer Trainer, streaming loader) on `mds`,
    trained in this process."""
    import yaml

    from mosaic_pretrain.commands.train import train
    from mosaic_pretrain.config import load_config

    with tempfile.TemporaryDirectory() as scratch:
        recipe = end_to_end_recipe(
            mds,
            preset,
            backend,
            microbatch,
            seq_len,
            batches,
            window,
            device,
            Path(scratch) / "run",
            compiled=compiled,
            num_workers=num_workers,
            overrides=overrides,
        )
        path = Path(scratch) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        train(load_config(path)).close()
        return end_to_end_summary(recipe)


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
        **pool_description(pool, plan.rows),
        "peak_bf16_flops": peaks[0],
        "matmul_ceiling_flops": ceiling,
        "largest_microbatch": largest,
        "plan": asdict(plan),
        "results": [asdict(result) for result in results],
    }
    if plan.end_to_end_batches:
        backend = fastest_backend(results)
        record["end_to_end"] = add_bare_step_ratio(
            end_to_end(
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
            ),
            results,
        )
    return record
