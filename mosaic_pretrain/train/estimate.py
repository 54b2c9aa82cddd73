"""`mosaic-pretrain check RECIPE --estimate`: what a run will cost, worked out before it starts.

Everything comes from arithmetic on the recipe, from one small read of its training data, and from
Composer's table of device peaks; nothing is timed here.

Work: token positions are batches x global_train_batch_size x max_seq_len. The data's fill (real
tokens per position), masked tokens and document lengths are read off up to `MEASURED_SAMPLES`
samples of the train split, spread evenly over it, through our dataset and collator, as training
reads them. Without local data the rows are assumed full: one document of max_seq_len tokens each,
mlm_probability of them masked. FLOPs are our MFU formula (`train/flops.py`, the formula the
speed monitor uses), 3x the forward, scaled from the measured samples to the run. Time is FLOPs /
(GPUs x peak x MFU); the peak is the entry of Composer's `GPU_AVAILABLE_FLOPS` that its
SpeedMonitor reads for the recipe's precision, so the MFU asked for here is the MFU a run logs.

Memory per GPU, an estimate by arithmetic, never a measurement:
- model states: 16 bytes per parameter (fp32 weights, fp32 gradients, AdamW's two fp32 moments),
  plus under autocast the half-precision copies of the weights it caches for the step;
- activations of one microbatch: the tensors autograd keeps for backward. With T real tokens, H
  hidden, I the feed-forward width, N heads, in the autocast dtype (b bytes; LayerNorm inputs in
  the LayerNorm's dtype, b with low_precision_layernorm else 4), per layer of our post-LayerNorm
  encoder layer (`model/modeling.py`):
    attention block: the layer's input (Wqkv's input, T x H); q, k, v as the kernel keeps them; the
      attention output (the output projection's input, T x H); the dropout mask (1 byte, when
      hidden_dropout_prob > 0); the residual sum LayerNorm normalizes (T x H) and its mean and
      rstd (2 float32 per token);
    feed-forward (GeGLU): the LayerNorm output (the up projection's input, T x H); gate and value
      (T x 2I: GELU keeps the gate, the product keeps the value); the activated gate (T x I); the
      product, which the down projection keeps (T x I); dropout masks on the product and on the
      output; the residual sum and its LayerNorm statistics. A plain MLP keeps its activation's
      input and output (T x I each) instead.
  Attention by backend: flash_attn and flex keep q, k, v (views of Wqkv's output), their output
  and a float32 log-sum-exp per head and token, and no L x L scores; flex also copies its output
  into token order. sdpa keeps q, k, v and its output padded per document and one additive ALiBi
  mask (documents x heads x L x L, autocast dtype) shared by all layers (on a GPU the memory-
  efficient kernel takes a mask without keeping the scores). eager keeps float32 q, k, v per
  document and the float32 probabilities, documents x heads x L x L per layer. `auto` is taken
  to resolve as on an Ampere-or-newer GPU with flash-attn installed (`model/attention.py`).
  Plus the embeddings' LayerNorm input, and the sparse MLM head on masked tokens only (M x H at
  each of its four steps, the logits M x V in the autocast dtype, one float32 log-sum-exp per row:
  `model/mlm_loss.py` keeps no float32 copy of the logits);
- the loss backward's working set at the start of backward, when all of the above is still held:
  the logits' gradient (M x V) and the float32 pieces it is computed in.
Left out: index tensors, the gradients flowing back through one layer at a time, DDP's buckets,
the allocator's fragmentation. Only MosaicBERT's layers are modelled; hf_bert gets no activation
estimate.
"""

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from mosaic_pretrain.config.load import parse_time
from mosaic_pretrain.config.schema import DatasetSection, ModelName, Precision, PretrainConfig
from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.dataset import MLMStreamingDataset, check_local_split
from mosaic_pretrain.errors import ConfigError, DataError
from mosaic_pretrain.model.mlm_loss import PIECES
from mosaic_pretrain.model.padding import IGNORE_INDEX, unpad_input
from mosaic_pretrain.train.builders import (
    build_streams,
    build_tokenizer,
    model_config,
    total_batches,
)
from mosaic_pretrain.train.flops import feed_forward_shape, forward_flops

# The paper's node: 8 x A100-80GB (Portes et al. 2023).
DEFAULT_GPU = "a100"
DEFAULT_GPUS = 8
DEFAULT_MFU = 0.4
# Short names for the keys of Composer's table; its own keys are accepted too.
GPU_NAMES = {"a100": "a100", "h100": "h100-sxm", "h200": "h200-sxm"}
# Enough samples for the fill to a percent or so, read in about a second on a CPU.
MEASURED_SAMPLES = 500
# fp32 weights, fp32 gradients and AdamW's two fp32 moments (exp_avg, exp_avg_sq).
BYTES_PER_PARAMETER = 16
AUTOCAST_BYTES = {Precision.amp_bf16: 2, Precision.amp_fp16: 2, Precision.fp32: 4}
DTYPE_NAMES = {Precision.amp_bf16: "bf16", Precision.amp_fp16: "fp16", Precision.fp32: "fp32"}
HALF_PRECISIONS = (Precision.amp_bf16, Precision.amp_fp16)
FLOAT32 = 4
GIB = 2**30


def composer_peaks() -> dict[str, dict[str, float]]:
    from composer.callbacks.speed_monitor import GPU_AVAILABLE_FLOPS

    return GPU_AVAILABLE_FLOPS


def gpu_choices() -> list[str]:
    return [*GPU_NAMES, *(name for name in composer_peaks() if name not in GPU_NAMES.values())]


@dataclass(frozen=True)
class Peak:
    flops: float  # per GPU, FLOP/s
    source: str  # where the number comes from, for the assumptions line


def device_peak(gpu: str, precision: Precision) -> Peak:
    """A GPU name's peak at the recipe's precision from Composer's table, or a number given."""
    name_or_peak = gpu_name_or_peak(gpu)
    if isinstance(name_or_peak, float):
        return Peak(name_or_peak, "--gpu as given")
    key = precision.value  # the key Composer's SpeedMonitor reads for this precision
    peaks = composer_peaks()[name_or_peak]
    if key not in peaks:
        raise ConfigError(
            f"Composer's GPU_AVAILABLE_FLOPS has no {key} peak for {name_or_peak}; give the "
            "peak in FLOP/s instead (e.g. --gpu 125e12)"
        )
    return Peak(peaks[key], f"{name_or_peak} {key} in Composer's GPU_AVAILABLE_FLOPS")


def gpu_name_or_peak(gpu: str) -> str | float:
    """`--gpu` as a key of Composer's table, or as a peak in FLOP/s."""
    flops = _as_number(gpu)
    if flops is not None:
        if not math.isfinite(flops) or flops <= 0:
            raise ConfigError(f"--gpu {gpu}: a peak in FLOP/s must be a positive number")
        return flops
    name = GPU_NAMES.get(gpu.lower(), gpu.lower())
    if name not in composer_peaks():
        raise ConfigError(
            f"--gpu {gpu!r} is unknown; choose one of {', '.join(gpu_choices())}, or give its "
            "peak in FLOP/s (e.g. --gpu 989e12)"
        )
    return name


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class EstimateOptions:
    """The command line's choices; each bad one is a one-line ConfigError."""

    gpu: str = DEFAULT_GPU
    gpus: int = DEFAULT_GPUS
    mfu: float = DEFAULT_MFU
    gpu_hour_price: float | None = None  # None: the recipe's callbacks.glue_sweep price, if any

    def __post_init__(self) -> None:
        if not 0.0 < self.mfu <= 1.0:
            raise ConfigError(
                f"--mfu must be in (0, 1] (the fraction of the peak a run reaches), got {self.mfu}"
            )
        if self.gpus < 1:
            raise ConfigError(f"--gpus must be at least 1, got {self.gpus}")
        if self.gpu_hour_price is not None and not self.gpu_hour_price >= 0:
            raise ConfigError(f"--gpu-hour-price must not be negative, got {self.gpu_hour_price}")
        gpu_name_or_peak(self.gpu)

    @classmethod
    def given(cls, **options) -> "EstimateOptions":
        """The options a command line set (None: not given), the defaults for the rest."""
        return cls(**{name: value for name, value in options.items() if value is not None})


@dataclass(frozen=True)
class StreamSample:
    """What was read from one source of the train split."""

    share: float  # its share of an epoch's samples
    lengths: torch.Tensor  # (documents,) real tokens of each sample read (a sample is a document)
    masked: float  # masked tokens among them
    rows: int  # rows they were collated into (fewer than samples when packing)


@dataclass(frozen=True)
class DataFill:
    """The train data's shape per sample, measured on a read or assumed."""

    samples: list[StreamSample]
    measured: bool
    source: str  # how it was found, for the table
    epoch_samples: int | None  # samples per epoch, when the local index was read
    unread: str | None = None  # why the split could not be read here

    def per_sample(self, values) -> float:
        """The share-weighted mean over the streams of `values(stream)` / samples read."""
        return sum(s.share * values(s) / len(s.lengths) for s in self.samples)

    @property
    def tokens_per_sample(self) -> float:
        return self.per_sample(lambda s: float(s.lengths.sum()))

    @property
    def masked_per_sample(self) -> float:
        return self.per_sample(lambda s: s.masked)

    @property
    def squares_per_sample(self) -> float:
        return self.per_sample(lambda s: float((s.lengths.double() ** 2).sum()))

    @property
    def rows_per_sample(self) -> float:
        return self.per_sample(lambda s: s.rows)

    @property
    def longest(self) -> int:
        return max(int(s.lengths.max()) for s in self.samples)


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU by arithmetic (see the module docstring for what is counted)."""

    model_states: float
    activations: float | None  # None: not modelled (hf_bert)
    loss_backward: float | None
    microbatch_rows: int
    microbatch_tokens: float
    backend: str  # the attention backend counted, and why
    microbatch_note: str

    @property
    def peak(self) -> float | None:
        if self.activations is None:
            return None
        return self.model_states + self.activations + self.loss_backward


@dataclass(frozen=True)
class Estimate:
    """What `check --estimate` prints, with the numbers it is worked out from."""

    recipe: str
    duration: str  # max_duration as written
    batches: int
    global_batch: int
    max_seq_len: int
    token_positions: int
    real_tokens: float
    masked_tokens: float
    attention_pairs: float  # sum of L^2 over the run's documents
    mlm_probability: float
    parameters: int
    model_name: str
    flops: float
    peak: Peak
    gpus: int
    mfu: float
    hours: float
    gpu_hours: float
    price: float | None
    price_source: str
    cost: float | None
    memory: Memory
    data: DataFill
    precision: Precision

    @property
    def fill(self) -> float:
        return self.real_tokens / self.token_positions


def estimate_report(
    path: str, overrides: list[str], options: EstimateOptions, world_size: int = 1
) -> tuple[str, list[str]]:
    """The printed estimate for the recipe at `path`, and the problems that stopped it (for the
    check's list). A recipe that does not load leaves its problems to the check."""
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.errors import MosaicPretrainError

    try:
        config = load_config(path, overrides, world_size)
    except MosaicPretrainError:
        return "estimate: none, the recipe does not load (its problems follow)", []
    try:
        made = estimate(config, options, str(path))
    except MosaicPretrainError as error:
        return "estimate: none (see the problems below)", [
            f"--estimate: {problem}" for problem in error.problems
        ]
    return format_estimate(made), []


def estimate(config: PretrainConfig, options: EstimateOptions, recipe: str = "") -> Estimate:
    """The estimate for a loaded recipe on `options.gpus` GPUs of `options.gpu`."""
    peak = device_peak(options.gpu, config.precision)
    per_device = _per_device_batch(config, options.gpus)
    tokenizer = build_tokenizer(config)
    model = model_config(config.model, tokenizer, config.algorithms.fused_layernorm is not None)
    data = measure_data(config, tokenizer)
    batches = count_batches(config, data, options.gpus)
    samples = batches * config.global_train_batch_size
    flops = training_flops_per_sample(model, data) * samples
    hours = flops / (options.gpus * peak.flops * options.mfu) / 3600
    price, price_source = _price(config, options)
    parameters = count_parameters(config, model)
    return Estimate(
        recipe=recipe,
        duration=config.max_duration,
        batches=batches,
        global_batch=config.global_train_batch_size,
        max_seq_len=_max_seq_len(config),
        token_positions=samples * _max_seq_len(config),
        real_tokens=data.tokens_per_sample * samples,
        masked_tokens=data.masked_per_sample * samples,
        attention_pairs=data.squares_per_sample * samples,
        mlm_probability=_mlm_probability(config),
        parameters=parameters,
        model_name=config.model.name.value,
        flops=flops,
        peak=peak,
        gpus=options.gpus,
        mfu=options.mfu,
        hours=hours,
        gpu_hours=hours * options.gpus,
        price=price,
        price_source=price_source,
        cost=None if price is None else hours * options.gpus * price,
        memory=estimate_memory(config, model, parameters, data, per_device),
        data=data,
        precision=config.precision,
    )


def training_flops_per_sample(model, data: "DataFill") -> float:
    """train/flops.py's forward + backward on the samples read, per sample (share-weighted)."""
    width, gated = feed_forward_shape(model)
    return 3 * data.per_sample(
        lambda sample: forward_flops(
            model.hidden_size,
            width,
            model.num_hidden_layers,
            model.vocab_size,
            gated,
            sample.lengths,
            sample.masked,
        )
    )


def _max_seq_len(config: PretrainConfig) -> int:
    return config.train_loader.dataset.max_seq_len or config.max_seq_len


def _mlm_probability(config: PretrainConfig) -> float:
    return config.train_loader.dataset.mlm_probability or config.mlm_probability


def _per_device_batch(config: PretrainConfig, gpus: int) -> int:
    per_device, remainder = divmod(config.global_train_batch_size, gpus)
    microbatch = config.device_train_microbatch_size
    if remainder or (isinstance(microbatch, int) and per_device % microbatch):
        raise ConfigError(
            f"global_train_batch_size={config.global_train_batch_size} does not split over "
            f"--gpus {gpus} into whole microbatches of device_train_microbatch_size="
            f"{microbatch}; choose another --gpus"
        )
    return per_device


def _price(config: PretrainConfig, options: EstimateOptions) -> tuple[float | None, str]:
    if options.gpu_hour_price is not None:
        return options.gpu_hour_price, "--gpu-hour-price"
    sweep = config.callbacks.glue_sweep
    if sweep is not None and sweep.gpu_hour_price is not None:
        return sweep.gpu_hour_price, "callbacks.glue_sweep.gpu_hour_price"
    return None, ""


def count_batches(config: PretrainConfig, data: DataFill, gpus: int) -> int:
    """Batches the run trains: Composer stops at the first batch that reaches max_duration;
    `tok` counts real tokens (the run's clock), `ep` the epoch's batches on `gpus` ranks."""
    known = total_batches(config)  # ba and sp: as the console counts them
    if known is not None:
        return known
    duration = parse_time("max_duration", config.max_duration)
    value, batch = int(duration.value), config.global_train_batch_size
    if duration.unit == "tok":
        return math.ceil(value / (batch * data.tokens_per_sample))
    if data.epoch_samples is None:
        raise DataError(
            f"max_duration={config.max_duration}: an epoch's batches need the train split's "
            f"sample count from its local MDS index, and there is {data.unread}; give "
            "max_duration in ba, sp or tok"
        )
    # Streaming gives each rank ceil(epoch / ranks) samples; drop_last drops a partial batch.
    per_rank, per_device = math.ceil(data.epoch_samples / gpus), batch // gpus
    per_epoch = (
        per_rank // per_device if config.train_loader.drop_last else -(-per_rank // per_device)
    )
    return value * per_epoch


def measure_data(config: PretrainConfig, tokenizer) -> DataFill:
    """Up to MEASURED_SAMPLES train samples through our dataset and collator; full rows assumed
    when the split is not on this machine."""
    section = config.train_loader.dataset
    max_seq_len = _max_seq_len(config)
    missing = _missing_data(section)
    if missing is not None:
        assumed = StreamSample(
            1.0, torch.tensor([max_seq_len]), _mlm_probability(config) * max_seq_len, 1
        )
        source = f"fill 1.0 assumed (full rows, one document each): {missing}"
        return DataFill([assumed], False, source, None, missing)
    local = replace(  # read the local copy only: never download for an estimate
        section,
        remote=None,
        streams=None
        if section.streams is None
        else {name: replace(s, remote=None) for name, s in section.streams.items()},
    )
    dataset = MLMStreamingDataset(
        local=local.local,
        split=local.split,
        streams=build_streams(local),
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        shuffle=False,
        batch_size=1,
    )
    try:
        whole_word = section.mlm_whole_word
        collator = MLMCollator(
            tokenizer,
            _mlm_probability(config),
            max_seq_len,
            seed=config.seed,
            packing=section.packing,
            whole_word=config.mlm_whole_word if whole_word is None else whole_word,
        )
        per_stream = max(1, MEASURED_SAMPLES // dataset.num_streams)
        samples = [
            _read_stream(dataset, stream, collator, per_stream)
            for stream in range(dataset.num_streams)
        ]
        read = sum(len(s.lengths) for s in samples)
        where = ", ".join(f"{s.local}/{s.split or ''}".replace("//", "/") for s in dataset.streams)
        return DataFill(
            samples, True, f"fill measured on {read:,} samples of {where}", dataset.epoch_size
        )
    finally:
        dataset.release_shared_memory()


def _missing_data(section: DatasetSection) -> str | None:
    """Why the train split cannot be read here, or None when every source is complete locally."""
    from mosaic_pretrain.train.builders import data_sources

    for source in data_sources(section):
        try:
            check_local_split(source.local, source.split)
        except DataError as error:
            reason = str(error).split(";")[0]
            if section.convert_builtin_corpus:
                reason += " (train converts the shipped corpus there first)"
            elif source.remote is not None:
                reason += f" (its remote {source.remote} is read at run time only)"
            return reason
    return None


def _read_stream(
    dataset: MLMStreamingDataset, stream: int, collator: MLMCollator, count: int
) -> StreamSample:
    """`count` samples spread evenly over one stream, collated as training collates them."""
    first = int(dataset.sample_offset_per_stream[stream])
    size = int(dataset.samples_per_stream[stream])
    ids = np.unique(np.linspace(first, first + size - 1, min(count, size)).round().astype(int))
    batch = collator([dataset[int(i)] for i in ids])
    _, cu_seqlens, _ = unpad_input(batch["attention_mask"])
    share = float(dataset.streams[stream].choose) / dataset.epoch_size
    return StreamSample(
        share,
        (cu_seqlens[1:] - cu_seqlens[:-1]).long(),
        float((batch["labels"] != IGNORE_INDEX).sum()),
        len(batch["input_ids"]),
    )


def count_parameters(config: PretrainConfig, model) -> int:
    """Parameters of the recipe's model, built on the meta device (no memory allocated); tied
    weights count once, as the optimizer sees them."""
    from transformers import BertForMaskedLM

    from mosaic_pretrain.model import MosaicBertForMaskedLM

    model_class = (
        BertForMaskedLM if config.model.name is ModelName.hf_bert else MosaicBertForMaskedLM
    )
    with torch.device("meta"):
        built = model_class(model)
    return sum(parameter.numel() for parameter in built.parameters())


def estimate_memory(
    config: PretrainConfig, model, parameters: int, data: DataFill, per_device: int
) -> Memory:
    """Model states and one microbatch's activations per GPU (see the module docstring)."""
    half = config.precision in HALF_PRECISIONS
    dtype = AUTOCAST_BYTES[config.precision]
    states = parameters * (BYTES_PER_PARAMETER + (dtype if half else 0))
    microbatch = config.device_train_microbatch_size
    samples_per_row = 1 / data.rows_per_sample
    if microbatch == "auto":
        rows = math.ceil(per_device / samples_per_row)
        note = (
            f"device_train_microbatch_size=auto: Composer searches for the largest that fits; "
            f"counted at the whole per-device batch ({per_device:,} samples), its largest"
        )
    else:
        rows, note = microbatch, f"device_train_microbatch_size={microbatch}"
    tokens = rows * samples_per_row * data.tokens_per_sample
    if config.model.name is not ModelName.mosaic_bert:
        return Memory(states, None, None, rows, tokens, "not modelled for hf_bert", note)
    documents = rows * samples_per_row
    masked = tokens * data.masked_per_sample / data.tokens_per_sample
    backend, why = attention_backend(config, model)
    shape = LayerShape.of(model, dtype, backend)
    activations = (
        tokens * (shape.embedding_bytes() + model.num_hidden_layers * shape.layer_bytes_per_token())
        + shape.per_document_bytes(documents, data.longest, model.num_hidden_layers)
        + masked * shape.head_bytes_per_masked(model.vocab_size)
    )
    loss = (
        masked * model.vocab_size * dtype
        + 2 * math.ceil(masked / PIECES) * model.vocab_size * FLOAT32
    )
    return Memory(states, activations, loss, rows, tokens, f"{backend} ({why})", note)


def attention_backend(config: PretrainConfig, model) -> tuple[str, str]:
    """The backend whose memory is counted, and why that one."""
    name = model.attention_backend
    if name != "auto":
        return name, "the recipe's"
    if config.precision in HALF_PRECISIONS:
        return "flash_attn", "auto: as on an Ampere+ GPU with flash-attn"
    if model.attention_probs_dropout_prob == 0.0:
        return "flex", "auto: fp32, no attention dropout"
    return "sdpa", "auto: fp32 with attention dropout"


@dataclass(frozen=True)
class LayerShape:
    """The sizes the activation arithmetic needs, in bytes where it says so."""

    hidden: int
    width: int  # the feed-forward activation's width
    heads: int
    gated: bool
    dtype: int  # autocast dtype bytes
    norm: int  # bytes of what LayerNorm keeps (the autocast dtype when low precision)
    dropout: bool  # hidden_dropout_prob > 0: 1-byte masks
    attention_dropout: bool
    backend: str

    @classmethod
    def of(cls, model, dtype: int, backend: str) -> "LayerShape":
        width, gated = feed_forward_shape(model)
        return cls(
            hidden=model.hidden_size,
            width=width,
            heads=model.num_attention_heads,
            gated=gated,
            dtype=dtype,
            norm=dtype if model.low_precision_layernorm else FLOAT32,
            dropout=model.hidden_dropout_prob > 0,
            attention_dropout=model.attention_probs_dropout_prob > 0,
            backend=backend,
        )

    def layer_norm_bytes(self) -> int:
        """What one LayerNorm keeps per token: its input and float32 mean and rstd."""
        return self.norm * self.hidden + 2 * FLOAT32

    def embedding_bytes(self) -> int:
        return self.layer_norm_bytes() + (self.hidden if self.dropout else 0)

    def layer_bytes_per_token(self) -> int:
        h, i, b = self.hidden, self.width, self.dtype
        mask = 1 if self.dropout else 0
        attention = b * h + b * h + mask * h + self.layer_norm_bytes()  # input, output, mask, norm
        if self.backend in ("flash_attn", "flex"):
            attention += 3 * b * h + FLOAT32 * self.heads  # q, k, v and log-sum-exp
        if self.backend == "flex":
            attention += b * h  # its output copied into token order
        inner = 4 * b * i if self.gated else 2 * b * i  # gate+value, activated, product | in, out
        feed_forward = b * h + inner + mask * (i + h) + self.layer_norm_bytes()
        return attention + feed_forward

    def per_document_bytes(self, documents: float, length: int, layers: int) -> float:
        """eager's and sdpa's tensors padded per document (documents x length each)."""
        h, n, b = self.hidden, self.heads, self.dtype
        slots, scores = documents * length, documents * n * length * length
        if self.backend == "eager":
            probabilities = scores * FLOAT32 * (2 if self.attention_dropout else 1)
            dropout_mask = scores if self.attention_dropout else 0
            alibi = n * length * length * FLOAT32  # one bias, shared
            return layers * (3 * slots * h * FLOAT32 + probabilities + dropout_mask) + alibi
        if self.backend == "sdpa":
            per_layer = 4 * slots * h * b + slots * n * FLOAT32  # q, k, v, output, log-sum-exp
            return layers * per_layer + scores * b  # the mask, shared by every layer
        return 0.0

    def head_bytes_per_masked(self, vocab: int) -> int:
        """The MLM head's four steps (M x H each, GELU's output in the LayerNorm's dtype), the
        logits in the autocast dtype and the loss's float32 log-sum-exp."""
        return 3 * self.dtype * self.hidden + self.layer_norm_bytes() + self.dtype * vocab + FLOAT32


def format_estimate(estimate: Estimate) -> str:
    """The estimate as an aligned table and one line of assumptions."""
    rows = [*_work_rows(estimate), *_memory_rows(estimate)]
    name_width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [f"estimate for {estimate.recipe or 'the recipe'} (before any compute is spent):"]
    lines += [
        f"  {name:<{name_width}}  {value:>{value_width}}  {note}".rstrip()
        for name, value, note in rows
    ]
    assumptions = [
        f"MFU {estimate.mfu:g}",
        f"peak {estimate.peak.source}",
        estimate.data.source,
        f"dtype {DTYPE_NAMES[estimate.precision]} (precision={estimate.precision.value})",
        estimate.memory.microbatch_note,
        "eval passes not counted",
    ]
    return "\n".join([*lines, "assumptions: " + "; ".join(assumptions)])


Row = tuple[str, str, str]  # name, value, how it was found


def _work_rows(e: Estimate) -> list[Row]:
    how = "measured" if e.data.measured else "assumed"
    masked = f"{e.masked_tokens / e.real_tokens:.1%} of real tokens"
    return [
        (
            "batches",
            f"{e.batches:,}",
            f"max_duration={e.duration}, {e.global_batch:,} samples each",
        ),
        (
            "token positions",
            f"{e.token_positions:,}",
            f"batches x {e.global_batch:,} x max_seq_len {e.max_seq_len}",
        ),
        ("real tokens", f"{e.real_tokens:,.0f}", f"fill {e.fill:.3f} ({how})"),
        (
            "masked tokens",
            f"{e.masked_tokens:,.0f}",
            f"{masked} (mlm_probability {e.mlm_probability:g})",
        ),
        ("attention pairs", f"{e.attention_pairs:.4g}", "sum of L^2 over documents of L tokens"),
        ("parameters", f"{e.parameters:,}", e.model_name),
        ("training FLOPs", f"{e.flops:.4g}", "3 x forward, mosaic_pretrain/train/flops.py"),
        ("peak per GPU", f"{e.peak.flops / 1e12:g} TFLOP/s", e.peak.source),
        ("time", f"{_amount(e.hours)} h", f"on {e.gpus} GPU(s) at MFU {e.mfu:g}"),
        ("GPU-hours", _amount(e.gpu_hours), "time x GPUs"),
        _cost_row(e),
    ]


def _memory_rows(e: Estimate) -> list[Row]:
    memory = e.memory
    rows = [("model states", _gib(memory.model_states), _states_note(e.precision))]
    if memory.activations is None:
        return [*rows, ("activations", "-", memory.backend)]
    microbatch = (
        f"microbatch of {memory.microbatch_rows:,} rows, {memory.microbatch_tokens:,.0f} real "
        f"tokens; {memory.backend}"
    )
    return [
        *rows,
        ("activations", _gib(memory.activations), microbatch),
        ("loss backward", _gib(memory.loss_backward), "the logits' gradient and its fp32 pieces"),
        ("peak memory", _gib(memory.peak), "per GPU: an estimate by arithmetic, not measured"),
    ]


def _cost_row(e: Estimate) -> tuple[str, str, str]:
    if e.cost is None:
        return ("cost", "-", "give --gpu-hour-price P (or set callbacks.glue_sweep.gpu_hour_price)")
    return ("cost", _amount(e.cost), f"GPU-hours x {e.price:g} per GPU-hour ({e.price_source})")


def _states_note(precision: Precision) -> str:
    note = f"{BYTES_PER_PARAMETER} B/param (fp32 weights, gradients, AdamW's m and v)"
    if precision in HALF_PRECISIONS:
        note += f" + {AUTOCAST_BYTES[precision]} B/param (autocast's weight copies)"
    return note


def _amount(value: float) -> str:
    """Two decimals, or three significant digits below a hundredth."""
    return f"{value:,.2f}" if value >= 0.01 else f"{value:.3g}"


def _gib(size: float) -> str:
    return f"{size / GIB:.2f} GiB"
