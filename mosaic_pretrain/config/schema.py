"""The typed schema of a pretraining recipe. Keys keep the names of the published MosaicBERT YAML
files, so such a recipe loads with at most its data paths changed; new capabilities get new keys.

Each field is documented where it is declared. Durations and intervals are Composer time strings:
a number with a unit, `ba` (batches), `sp` (samples), `tok` (tokens), `ep` (epochs) or, for
warmup, `dur` (a fraction of the run).
"""

from dataclasses import dataclass, field
from enum import Enum


class ModelName(str, Enum):
    mosaic_bert = "mosaic_bert"  # ours: ALiBi, GeGLU, unpadding
    hf_bert = "hf_bert"  # transformers' BertForMaskedLM, the baseline


class Precision(str, Enum):
    fp32 = "fp32"
    amp_bf16 = "amp_bf16"
    amp_fp16 = "amp_fp16"


class OptimizerName(str, Enum):
    decoupled_adamw = "decoupled_adamw"  # AdamW with weight decay not scaled by the LR


class ConsoleMetrics(str, Enum):
    concise = "concise"  # one line of the figures a person watches (callbacks/console.py)
    all = "all"  # Composer's console logger: every logged key, per-parameter norms included


class SchedulerName(str, Enum):
    linear_decay_with_warmup = "linear_decay_with_warmup"  # MosaicBERT's: warmup, linear to alpha_f
    cosine_with_warmup = "cosine_with_warmup"  # warmup, then half a cosine down to alpha_f
    # warmup, constant at the peak, then a decay over the run's last t_decay (ours)
    warmup_stable_decay = "warmup_stable_decay"


class DecayShape(str, Enum):
    """How warmup_stable_decay falls from the peak to alpha_f over its decay, x going 0 -> 1."""

    linear = "linear"  # 1 - x
    cosine = "cosine"  # (1 + cos(pi x)) / 2
    one_minus_sqrt = "one_minus_sqrt"  # 1 - sqrt(x): Haegele et al. 2024's best WSD cooldown


@dataclass
class ModelConfigSection:
    """Overrides of the model's architecture; unset (null) fields keep the preset's value."""

    preset: str = "base"  # base | large | mini: the starting size (ours)
    vocab_size: int | None = None  # default: the tokenizer's size rounded up to 64
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    type_vocab_size: int | None = None
    layer_norm_eps: float | None = None
    initializer_range: float | None = None
    alibi_starting_size: int | None = None  # accepted from MosaicBERT recipes; bounds nothing
    attention_backend: str | None = None  # eager | sdpa | flex | flash_attn | auto
    low_precision_layernorm: bool | None = None
    # Feed-forward variant (ours): geglu (MosaicBERT, default), gelu (BERT's MLP), swiglu, reglu,
    # bilinear, silu, atlu, relu, atglu, and expanded gating ranges xgelu, xsilu, xatlu, xgeglu,
    # xswiglu, xatglu (one trainable range per block). See model/activations.py.
    ffn_activation: str | None = None
    # GLUs get 2/3 of intermediate_size per half (rounded to 64): about a plain MLP's parameters.
    ffn_param_matched: bool | None = None

    def overrides(self) -> dict:
        """The fields the recipe set, for `MosaicBertConfig.from_preset(preset, **overrides)`."""
        return {
            name: value
            for name, value in vars(self).items()
            if name != "preset" and value is not None
        }


@dataclass
class ModelSection:
    name: ModelName = ModelName.mosaic_bert
    # A published BERT (bert-base-uncased, bert-large-uncased, ...) whose sizes the model takes;
    # MosaicBERT's recipes set it to the tokenizer name. Sizes only: weights come from init_from.
    pretrained_model_name: str | None = None
    # Weights to start from (ours), weights only: the optimizer, schedule and step count start
    # anew. A directory of `mosaic-pretrain export` or `import` (or a run's export_folder), or for
    # hf_bert a transformers BERT directory (save_pretrained) or hub name. Also a Composer
    # checkpoint of an earlier run, or that run's save_folder (its latest checkpoint): a new
    # phase of it, e.g. a longer max_seq_len, with its own schedule, duration, batch size and
    # data; the earlier run's folder is only read. It must hold the recipe's model (sizes,
    # feed-forward, vocabulary, tokenizer): a difference is an error.
    init_from: str | None = None
    # With init_from a checkpoint: also take its optimizer's state (Adam's moments and step
    # counts), so the new phase continues the optimizer rather than restarting it. The learning
    # rate, betas and weight decay stay the recipe's; the schedule is the recipe's own.
    init_optimizer_state: bool = False
    # MosaicML's hf_bert key: true starts from the weights of pretrained_model_name.
    use_pretrained: bool = False
    tokenizer_name: str | None = None  # default: the top-level tokenizer_name
    model_config: ModelConfigSection = field(default_factory=ModelConfigSection)


@dataclass
class StreamSection:
    """One source of a mixture (ours): an MDS dataset, mixed by mosaicml-streaming's `Stream`.
    At most one of proportion, repeat and choose; none: all of its samples once per epoch."""

    local: str = "???"  # MDS folder (the cache when `remote` is set)
    remote: str | None = None
    split: str | None = None  # default: the dataset's split
    proportion: float | None = None  # its share of each epoch (relative to the others')
    repeat: float | None = None  # times each of its samples is seen per epoch (0.5: half)
    choose: int | None = None  # samples drawn from it per epoch


@dataclass
class DatasetSection:
    local: str | None = None  # MDS folder (the cache when `remote` is set); or set `streams`
    remote: str | None = None  # s3://, gs://, ... or null to read `local` only
    split: str | None = None  # subfolder: train / val (with streams: each stream's default)
    # Several MDS datasets mixed into one (ours), by name: {name: {local, proportion, ...}};
    # instead of local/remote. Each stream's samples are counted in the metrics.
    streams: dict[str, StreamSection] | None = None
    tokenizer_name: str | None = None  # default: the top-level tokenizer_name
    max_seq_len: int | None = None  # default: the top-level max_seq_len
    shuffle: bool = False
    mlm_probability: float | None = None  # default: the top-level mlm_probability
    mlm_whole_word: bool | None = None  # default: the top-level mlm_whole_word
    packing: bool = False  # several documents per row, kept apart by the model (ours)
    # If `local` holds no conversion yet, convert the corpus shipped with the package into it
    # first (5% to val): a fresh clone pretrains with no download (ours).
    convert_builtin_corpus: bool = False


@dataclass
class LoaderSection:
    name: str = "text"  # MosaicBERT's loader name, kept for compatibility; MDS either way
    dataset: DatasetSection = field(default_factory=DatasetSection)
    drop_last: bool = True
    num_workers: int = 8


@dataclass
class OptimizerSection:
    name: OptimizerName = OptimizerName.decoupled_adamw
    lr: float = 5.0e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1.0e-6
    weight_decay: float = 1.0e-5
    # Also decay the expanded activations' gate ranges (ours); off: decay would pull them to 0,
    # back to the unexpanded function.
    weight_decay_gate_ranges: bool = False


@dataclass
class SchedulerSection:
    """The learning rate over a run, as a multiple of optimizer.lr (the peak). A resumed run
    continues its schedule; a new phase (model.init_from) starts its own."""

    name: SchedulerName = SchedulerName.linear_decay_with_warmup
    t_warmup: str = "0.06dur"  # warmup length: a time string, `dur` = fraction of max_duration
    alpha_f: float = 0.02  # final LR as a fraction of the peak
    # warmup_stable_decay only: the decay at the end of the run (in dur, or max_duration's
    # unit), default 0.2dur; the stable phase is what lies between warmup and decay.
    t_decay: str | None = None
    decay_shape: DecayShape | None = None  # warmup_stable_decay only; default linear
    # warmup_stable_decay with a save_folder: keep the checkpoint taken where the decay starts,
    # as SAVE_FOLDER/stable/ep*-ba*-rank*.pt, outside save_num_checkpoints_to_keep's rotation,
    # so the run can be decayed later (a longer max_duration on resume) or again from it (a
    # new phase: model.init_from + init_optimizer_state).
    keep_stable_checkpoint: bool = True


@dataclass
class FusedLayerNormSection:
    """MosaicBERT's apex fused LayerNorm; here it turns on our low-precision LayerNorm."""


@dataclass
class AlgorithmsSection:
    fused_layernorm: FusedLayerNormSection | None = None


@dataclass
class SpeedMonitorSection:
    window_size: int = 100  # batches averaged for throughput and MFU
    # Peak FLOP/s of one device for MFU; default: Composer's table (A100, H100, H200) for the
    # run's precision. Set it for other devices.
    gpu_flops_available: float | None = None


@dataclass
class EmptySection:
    """A callback with no options: `lr_monitor: {}` switches it on."""


@dataclass
class OptimizerMonitorSection:
    """Gradient L2 norms (global and per layer)."""

    batch_log_interval: int = 10
    log_optimizer_metrics: bool = False  # also per-layer moment, parameter and update norms


@dataclass
class GateRangeMonitorSection:
    """The expanded activations' gate ranges (mean, spread, min, max over blocks); always on,
    silent for models without them (ours)."""

    batch_log_interval: int = 10


@dataclass
class GlueSweepSection:
    """GLUE during pretraining (ours): at each point (every `interval`, and at the end) the
    model's weights are copied to RUN/glue_points/POINT/ and finetuned with the `sweep`; the
    scores are logged against the pretraining clock. Points are independent of save_interval,
    and the copy outlives Composer's keep-N rotation until its sweep has finished."""

    # A GLUE sweep YAML (e.g. configs/glue/mosaic-bert-base.yaml). Its starting_point,
    # output_folder and run_name are replaced by each point's weights, folder and name.
    sweep: str = "???"
    sweep_overrides: list[str] = field(default_factory=list)  # key=value, e.g. tasks=[sst2]
    interval: str | None = None  # a point every N ba, sp or tok (e.g. 2000ba); null: at_end only
    at_end: bool = True  # a point at the end of training
    # GPU ids set aside for the sweeps, which then run while training goes on. Empty: the
    # sweeps run after training, on the training device (one process only).
    gpus: list[int] = field(default_factory=list)
    # Training pauses at each point until its sweep has finished (one process only).
    wait_for_sweeps: bool = False
    retries: int = 1  # a failed sweep runs again this many times (finished jobs are kept)
    gpu_hour_price: float | None = None  # price of one device-hour of training: adds a cost
    keep_weights: bool = False  # keep a point's weights after its sweep finished


@dataclass
class CallbacksSection:
    speed_monitor: SpeedMonitorSection | None = None
    lr_monitor: EmptySection | None = None
    memory_monitor: EmptySection | None = None
    optimizer_monitor: OptimizerMonitorSection | None = None
    gate_range_monitor: GateRangeMonitorSection = field(default_factory=GateRangeMonitorSection)
    glue_sweep: GlueSweepSection | None = None  # GLUE sweeps at points during pretraining


@dataclass
class WandbSection:
    project: str | None = None  # without a project, runs are logged offline
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggersSection:
    wandb: WandbSection | None = None


class FaultAction(str, Enum):
    stop = "stop"  # end the run; the last checkpoint is the last good one
    skip = "skip"  # drop the batch (no update) and go on, up to max_skipped_batches


@dataclass
class LossGuardSection:
    """Numerical faults, always checked: a NaN or infinite loss, and a spike when set (ours)."""

    action: FaultAction = FaultAction.stop
    # A loss above spike_factor x the mean of the last `window` batches is a fault; null: off.
    spike_factor: float | None = None
    window: int = 50
    max_skipped_batches: int = 10  # with action skip: stop after this many skipped batches


@dataclass
class CompileSection:
    """`torch.compile` of the model (ours); passed to Composer's `compile_config`."""

    backend: str = "inductor"
    mode: str | None = None  # e.g. max-autotune
    # None: true for mosaic_bert, whose unpadded sizes (real and masked tokens, the longest
    # document) change every batch, so a graph specialized on the first batch's sizes would be
    # compiled twice more before torch marks them dynamic; torch's own choice for the padded
    # hf_bert. true / false force it.
    dynamic: bool | None = None


@dataclass
class AblationSection:
    """One recipe key swept by `mosaic-pretrain ablate` (ours): a run per value (and seed), all
    else equal, compared on eval MLM loss at the same steps. `train` refuses such a recipe."""

    key: str = "???"  # dotted recipe key, e.g. model.model_config.ffn_activation
    values: list[str] = field(default_factory=list)  # as written after `key=` on a command line
    seeds: list[int] = field(default_factory=list)  # default: the recipe's seed
    output_folder: str = "./runs/{run_name}"  # a folder per run, and the table and plot


@dataclass
class FolderLockSection:
    """The lock a run holds on its save folder (ours): a second run into it is refused. A lock
    of this host whose process is gone is taken over; another host's process cannot be checked
    from here, so its lock counts as live while its holder keeps refreshing it (every 30 s)."""

    # Minutes without a refresh after which another host's lock counts as left by a dead run
    # (at least 2); null: never, only take_over frees it.
    other_host_timeout_minutes: float | None = 10.0
    # Take over another host's lock now, for a run known to be dead (its node gone) before the
    # timeout; never frees a lock whose process runs on this host.
    take_over: bool = False


@dataclass
class PretrainConfig:
    """A pretraining recipe. `???` marks a key the recipe must set."""

    run_name: str = "???"
    seed: int = 17
    precision: Precision = Precision.amp_bf16
    max_seq_len: int = 128
    tokenizer_name: str = "bert-base-uncased"
    mlm_probability: float = 0.3  # training masking rate; eval sets its own (0.15)
    # Mask whole words (all pieces of a chosen word, one 80/10/10 choice per word) at the same
    # expected share of tokens (ours); needs a tokenizer that marks word pieces (## or ▁).
    mlm_whole_word: bool = False
    # The published recipes define these two and refer to them with ${data_local}.
    data_local: str | None = None
    data_remote: str | None = None
    max_duration: str = "???"  # e.g. 286720000sp
    eval_interval: str = "2000ba"
    eval_subset_num_batches: int = -1  # batches of the eval set per evaluation; -1: all of it
    global_train_batch_size: int = 4096  # across all devices
    device_train_microbatch_size: int | str = 128  # per device, or auto
    device_eval_batch_size: int = 128
    save_folder: str | None = None  # may contain {run_name}
    save_interval: str = "3500ba"
    save_num_checkpoints_to_keep: int = 1
    load_path: str | None = None  # checkpoint to resume from
    # At the end of training, write a Hugging Face directory here (may contain {run_name}; ours).
    export_folder: str | None = None
    # Also write the model's code into the export, for trust_remote_code=True (mosaic_bert; ours).
    export_with_code: bool = False
    autoresume: bool = False  # continue from the latest checkpoint in save_folder
    # Write into a save_folder that already holds checkpoints of another run (ours).
    save_overwrite: bool = False
    compile: CompileSection | None = None  # torch.compile the model (ours)
    loss_guard: LossGuardSection = field(default_factory=LossGuardSection)
    folder_lock: FolderLockSection = field(default_factory=FolderLockSection)
    # Keys a resumed run may change from its checkpoint's recipe, e.g. [optimizer.lr] (ours).
    resume_allow_changes: list[str] = field(default_factory=list)
    # The console while training: null shows one live progress line on a terminal and a line
    # every console_log_interval batches elsewhere (a file, CI, a cluster job); true / false
    # force the live line / the lines.
    progress_bar: bool | None = None
    log_to_console: bool = True  # false: no lines while training (header and summary still print)
    console_log_interval: str = "1ba"  # in batches
    # What a console line holds (ours): concise figures, or every key logged (the long form;
    # `metrics.jsonl` and W&B always get every key).
    console_metrics: ConsoleMetrics = ConsoleMetrics.concise
    model: ModelSection = field(default_factory=ModelSection)
    train_loader: LoaderSection = field(default_factory=LoaderSection)
    eval_loader: LoaderSection | None = None
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    algorithms: AlgorithmsSection = field(default_factory=AlgorithmsSection)
    callbacks: CallbacksSection = field(default_factory=CallbacksSection)
    loggers: LoggersSection = field(default_factory=LoggersSection)
    ablation: AblationSection | None = None  # for `mosaic-pretrain ablate` only (ours)
