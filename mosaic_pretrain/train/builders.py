"""Builders: each turns one section of a validated recipe into the object Composer needs."""

import logging
import math
import os
from pathlib import Path

import torch
from composer.callbacks import LRMonitor, MemoryMonitor, OptimizerMonitor, SpeedMonitor
from composer.core import DataSpec, Evaluator, Time, TimeUnit
from composer.optim import DecoupledAdamW
from streaming import Stream
from transformers import BertForMaskedLM, PreTrainedTokenizerBase

from mosaic_pretrain.callbacks.console import ConsoleProgress
from mosaic_pretrain.callbacks.gate_ranges import GateRangeMonitor
from mosaic_pretrain.callbacks.loss_guard import LossGuard
from mosaic_pretrain.callbacks.metrics_file import MetricsFile
from mosaic_pretrain.callbacks.wandb_logger import WandBMetricsLogger
from mosaic_pretrain.config.schema import (
    CallbacksSection,
    ConsoleMetrics,
    DatasetSection,
    LoaderSection,
    LoggersSection,
    LossGuardSection,
    ModelName,
    ModelSection,
    OptimizerSection,
    PretrainConfig,
)
from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.convert import MANIFEST, ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset, build_mlm_dataloader
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.model.activations import gate_range_parameters
from mosaic_pretrain.train.composer_model import MLMComposerModel
from mosaic_pretrain.train.init_weights import init_source, load_initial_model
from mosaic_pretrain.train.microbatches import (
    count_tokens,
    layout_to_device,
    split_into_microbatches,
)
from mosaic_pretrain.train.model_sizes import model_config
from mosaic_pretrain.train.phase_start import checkpoint_source, load_phase_model

logger = logging.getLogger(__name__)

BUILTIN_VAL_FRACTION = 0.05


def build_tokenizer(config: PretrainConfig) -> PreTrainedTokenizerBase:
    return load_tokenizer(config.model.tokenizer_name or config.tokenizer_name)


def build_model(
    section: ModelSection,
    tokenizer: PreTrainedTokenizerBase,
    low_precision_ln: bool,
    initial_weights: bool = True,
):
    """MosaicBERT (sized by preset and overrides) or the baseline, holding the weights of
    `model.init_from` when set and `initial_weights`; without, the model a checkpoint fills
    (export, resume, the checkpoint check)."""
    config = model_config(section, tokenizer, low_precision_ln, not initial_weights)
    model_class = BertForMaskedLM if section.name is ModelName.hf_bert else MosaicBertForMaskedLM
    if initial_weights and checkpoint_source(section) is not None:  # a new phase of a run
        return load_phase_model(model_class, config, section, tokenizer)
    if initial_weights and init_source(section) is not None:
        return load_initial_model(model_class, config, section, tokenizer)
    return model_class(config)


def _ensure_builtin_corpus(dataset: DatasetSection) -> None:
    local = Path(dataset.local)
    if not (local / MANIFEST).exists() or not (local / "train").exists():
        # Waits for another run converting it (another rank, a run beside this one), then
        # finds the splits complete.
        options = ConvertOptions(val_fraction=BUILTIN_VAL_FRACTION)
        convert(options, local, progress=False, wait_for_lock=True)


def build_streams(dataset: DatasetSection) -> list[Stream] | None:
    """mosaicml-streaming's Streams for `dataset.streams` (None for a single dataset)."""
    if dataset.streams is None:
        return None
    return [
        Stream(
            local=stream.local,
            remote=stream.remote,
            split=stream.split or dataset.split,
            proportion=stream.proportion,
            repeat=stream.repeat,
            choose=stream.choose,
        )
        for stream in dataset.streams.values()
    ]


def data_sources(dataset: DatasetSection) -> list[Stream]:
    """Every MDS dataset a loader reads: its streams, or its one local/remote folder."""
    streams = build_streams(dataset)
    return streams or [Stream(local=dataset.local, remote=dataset.remote, split=dataset.split)]


def build_dataloader(
    loader: LoaderSection,
    config: PretrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
) -> DataSpec:
    dataset_section = loader.dataset
    if dataset_section.convert_builtin_corpus:
        _ensure_builtin_corpus(dataset_section)
    max_seq_len = dataset_section.max_seq_len or config.max_seq_len
    probability = dataset_section.mlm_probability or config.mlm_probability
    dataset = MLMStreamingDataset(
        local=dataset_section.local,
        remote=dataset_section.remote,
        split=dataset_section.split,
        streams=build_streams(dataset_section),
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        shuffle=dataset_section.shuffle,
        shuffle_seed=config.seed,
        batch_size=device_batch_size,
    )
    whole_word = dataset_section.mlm_whole_word
    collator = MLMCollator(
        tokenizer,
        probability,
        max_seq_len,
        seed=config.seed,
        packing=dataset_section.packing,
        whole_word=config.mlm_whole_word if whole_word is None else whole_word,
    )
    # The Trainer trains on the GPU when there is one, copying each microbatch and its layout
    # with non_blocking=True: from page-locked memory that copy overlaps the step's work.
    on_gpu = torch.cuda.is_available()
    dataloader = build_mlm_dataloader(
        dataset, collator, device_batch_size, loader.num_workers, loader.drop_last, on_gpu
    )
    return DataSpec(
        dataloader,
        split_batch=split_into_microbatches,
        microbatch_transforms=layout_to_device,
        get_num_samples_in_batch=lambda batch: len(batch["sample_index"]),
        get_num_tokens_in_batch=count_tokens,
    )


def build_evaluator(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> Evaluator | None:
    if config.eval_loader is None:
        return None
    spec = build_dataloader(config.eval_loader, config, tokenizer, config.device_eval_batch_size)
    return Evaluator(
        label="eval", dataloader=spec, metric_names=["LanguageCrossEntropy", "MaskedAccuracy"]
    )


def build_optimizer(section: OptimizerSection, model: torch.nn.Module) -> DecoupledAdamW:
    """Decoupled AdamW on every parameter; the expanded activations' gate ranges go in a group
    of their own without weight decay unless `weight_decay_gate_ranges`."""
    gate_ranges = gate_range_parameters(model)
    if gate_ranges and not section.weight_decay_gate_ranges:
        kept = {id(parameter) for parameter in gate_ranges.values()}
        rest = [parameter for parameter in model.parameters() if id(parameter) not in kept]
        parameters = [
            {"params": rest},
            {"params": list(gate_ranges.values()), "weight_decay": 0.0},
        ]
    else:
        parameters = list(model.parameters())
    return DecoupledAdamW(
        parameters,
        lr=section.lr,
        betas=tuple(section.betas),
        eps=section.eps,
        weight_decay=section.weight_decay,
    )


def build_composer_model(
    config: PretrainConfig, tokenizer, resumed: bool = False
) -> MLMComposerModel:
    """The model to train. A `resumed` run's weights come from its checkpoint, so the weights it
    started from (model.init_from) are not read again: they may be gone by then."""
    low_precision = config.algorithms.fused_layernorm is not None
    if resumed and init_source(config.model) is not None:
        logger.info("resuming: the checkpoint's weights replace those of model.init_from")
    return MLMComposerModel(
        build_model(config.model, tokenizer, low_precision, initial_weights=not resumed)
    )


def build_callbacks(section: CallbacksSection) -> list:
    callbacks = []
    if section.speed_monitor is not None:
        callbacks.append(
            SpeedMonitor(
                window_size=section.speed_monitor.window_size,
                gpu_flops_available=section.speed_monitor.gpu_flops_available,
            )
        )
    if section.lr_monitor is not None:
        callbacks.append(LRMonitor())
    if section.memory_monitor is not None:
        callbacks.append(MemoryMonitor())
    if section.optimizer_monitor is not None:
        monitor = section.optimizer_monitor
        callbacks.append(
            OptimizerMonitor(
                log_optimizer_metrics=monitor.log_optimizer_metrics,
                batch_log_interval=monitor.batch_log_interval,
            )
        )
    callbacks.append(GateRangeMonitor(section.gate_range_monitor.batch_log_interval))
    return callbacks


def build_loss_guard(section: LossGuardSection) -> LossGuard:
    """The guard weighs each microbatch's loss by its masked tokens, as the Trainer's gradient
    accumulation does, so the loss it checks is the batch's."""
    return LossGuard(
        action=section.action.value,
        spike_factor=section.spike_factor,
        window=section.window,
        max_skipped_batches=section.max_skipped_batches,
        weigh=lambda batch: count_tokens(batch)["loss_generating"],
    )


def total_batches(config: PretrainConfig) -> int | None:
    """max_duration in batches, when it is given in batches or samples (else unknown ahead)."""
    duration = Time.from_timestring(config.max_duration)
    if duration.unit is TimeUnit.BATCH:
        return duration.value
    if duration.unit is TimeUnit.SAMPLE:
        return math.ceil(duration.value / config.global_train_batch_size)
    return None


def build_console(config: PretrainConfig) -> list[ConsoleProgress]:
    """Our concise console lines, unless the recipe asks for none or for Composer's long form."""
    if not config.log_to_console or config.console_metrics is ConsoleMetrics.all:
        return []
    return [
        ConsoleProgress(config.console_log_interval, config.progress_bar, total_batches(config))
    ]


def build_loggers(section: LoggersSection, folder: Path) -> list:
    loggers = [MetricsFile(folder)]
    if section.wandb is None:
        return loggers
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(
            "loggers.wandb needs the wandb package: pip install 'mosaic_pretrain[wandb]'"
        ) from None
    if section.wandb.project is None:
        os.environ.setdefault("WANDB_MODE", "offline")  # no project: never send anything
    return [
        *loggers,
        WandBMetricsLogger(
            project=section.wandb.project,
            entity=section.wandb.entity,
            tags=list(section.wandb.tags),
        ),
    ]


def build_compile_config(config: PretrainConfig) -> dict | None:
    """Composer's `compile_config` from the recipe's `compile` section (None: not compiled)."""
    if config.compile is None:
        return None
    dynamic = config.compile.dynamic
    if dynamic is None and config.model.name is ModelName.mosaic_bert:
        dynamic = True  # its sizes change every batch (see CompileSection.dynamic)
    options = {"backend": config.compile.backend, "dynamic": dynamic}
    if config.compile.mode is not None:
        options["mode"] = config.compile.mode
    return options
