"""How a `torch.compile`d training run compiles: graphs, graph breaks and recompiles, counted
through the real `train` path (recipe -> Composer Trainer -> streaming loader -> model) with
batches whose sizes change every step: documents of one paragraph each, so the real-token count,
the masked-token count and the longest document differ from batch to batch.

Counted with torch's own instruments: Dynamo's counters (`unique_graphs`, `graph_break`) and
its recompile log (`TORCH_LOGS=recompiles`, read through a logging handler), reset before each
run. The compiled region is the Composer model's forward (Composer compiles `state.model`), so a
graph break anywhere in the step's forward, and any guard that fails on a later batch, is seen.
"""

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mosaic_pretrain.bench.records import write_record
from mosaic_pretrain.device_info import device_description

RECOMPILE_LOGGER = "torch._dynamo"


@dataclass
class CompileCounts:
    backend: str  # attention backend
    compile_backend: str  # torch.compile backend: inductor, aot_eager, ...
    batches: int
    graphs: int  # distinct graphs compiled over the run (recompiles included)
    graph_breaks: int
    recompiles: int
    seconds: float
    status: str = "ok"
    break_reasons: list[str] = field(default_factory=list)
    recompile_reasons: list[str] = field(default_factory=list)


class _RecompileLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.lstrip().startswith("Recompiling function"):
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            self.reasons.append(" ".join(lines[1:])[:300])


def count_compilation(
    recipe: dict, backend: str, compile_backend: str, batches: int, with_eval: bool
) -> CompileCounts:
    """Train `recipe` (a dict in recipe form, without `compile`) compiled, and count."""
    import yaml

    from mosaic_pretrain.commands.train import train
    from mosaic_pretrain.config import load_config

    counters = torch._dynamo.utils.counters
    torch._dynamo.reset()
    counters.clear()
    log = _RecompileLog()
    torch._logging.set_logs(recompiles=True)
    dynamo_logger = logging.getLogger(RECOMPILE_LOGGER)
    dynamo_logger.addHandler(log)
    started = time.perf_counter()
    status = "ok"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            run = {
                **recipe,
                "max_duration": f"{batches}ba",
                "eval_interval": f"{batches}ba",
                "save_folder": f"{scratch}/run",
                "save_interval": f"{batches}ba",
                "compile": {"backend": compile_backend},
            }
            run["model"]["model_config"]["attention_backend"] = backend
            if not with_eval:
                run["eval_loader"] = None
            path = Path(scratch) / "recipe.yaml"
            path.write_text(yaml.safe_dump(run))
            train(load_config(path)).close()
    except Exception as error:  # a backend this torch cannot compile here: say so, go on
        status = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    finally:
        dynamo_logger.removeHandler(log)
        torch._logging.set_logs()
    breaks = counters["graph_break"]
    counts = CompileCounts(
        backend=backend,
        compile_backend=compile_backend,
        batches=batches,
        graphs=counters["stats"]["unique_graphs"],
        graph_breaks=sum(breaks.values()),
        recompiles=len(log.reasons),
        seconds=time.perf_counter() - started,
        status=status,
        break_reasons=[reason[:300] for reason in breaks],
        recompile_reasons=log.reasons,
    )
    torch._dynamo.reset()
    return counts


def tiny_recipe(data: Path) -> dict:
    """A 2-layer, 64-wide MosaicBERT on `data`, fp32, microbatch 8 of 16: the CPU's size."""
    return {
        "run_name": "compile-counts",
        "precision": "fp32",
        "max_seq_len": 128,
        "model": {
            "name": "mosaic_bert",
            "model_config": {
                "preset": "mini",
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
        },
        "train_loader": {
            "dataset": {"local": str(data), "split": "train", "shuffle": True},
            "num_workers": 0,
        },
        "eval_loader": {
            "dataset": {"local": str(data), "split": "train", "mlm_probability": 0.15},
            "num_workers": 0,
        },
        "eval_subset_num_batches": 2,
        "global_train_batch_size": 16,
        "device_train_microbatch_size": 8,
        "device_eval_batch_size": 16,
        "log_to_console": False,
        "export_folder": None,
    }


def run_compile_counts(
    backends: tuple[str, ...],
    compile_backends: tuple[str, ...],
    data_folder: Path,
    batches: int = 6,
    with_eval: bool = True,
) -> dict:
    from mosaic_pretrain.bench.training_step import write_benchmark_corpus

    data = write_benchmark_corpus(data_folder, "paragraphs", max_documents=2000)
    results = [
        count_compilation(tiny_recipe(data), backend, compile_backend, batches, with_eval)
        for compile_backend in compile_backends
        for backend in backends
    ]
    return {
        **device_description(torch.device("cpu")),
        "data": "shipped corpus, one paragraph per document (sizes change every batch)",
        "batches": batches,
        "microbatches_per_batch": 2,
        "eval": with_eval,
        "results": [asdict(result) for result in results],
    }


def results_markdown(record: dict) -> str:
    lines = [
        "# torch.compile through `mosaic-pretrain train`: graphs, breaks, recompiles",
        "",
        f"{record['device']}; torch {record['torch']}; {record['date']}. {record['data']}; "
        f"{record['batches']} batches of {record['microbatches_per_batch']} microbatches"
        + (", then one evaluation." if record["eval"] else "."),
        "",
        "| attention backend | compile backend | graphs | graph breaks | recompiles | seconds "
        "| status |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['backend']} | {row['compile_backend']} | {row['graphs']} | "
            f"{row['graph_breaks']} | {row['recompiles']} | {row['seconds']:.0f} | "
            f"{row['status']} |"
        )
    reasons = [
        f"- {row['backend']}/{row['compile_backend']}: {reason}"
        for row in record["results"]
        for reason in row["recompile_reasons"] + row["break_reasons"]
    ]
    if reasons:
        lines += ["", "Recompile and break reasons:", "", *reasons]
    return "\n".join(lines) + "\n"


def write_results(record: dict, out: Path) -> tuple[Path, Path]:
    return write_record(record, out, results_markdown(record))
