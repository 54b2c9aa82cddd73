"""The typed schema of a pretraining recipe. Keys keep the names of the published MosaicBERT YAML
files, so such a recipe loads with at most its data paths changed; new capabilities get new keys.

Each field is documented where it is declared. Durations and intervals are Composer time strings:
a number with a unit, `ba` (batches), `sp` (samples), `tok` (tokens), `ep` (epochs) or, for
warmup, `dur` (a fraction of the run).
"""

from dataclasses import dataclass, field
from enum import Enum

from mosaic_pretrain.ranges import PATH, SEED, Items, Range, TimeRange, ranged

# Valid values shared by several fields (config/ranges.py; the README's table lists them all).
POSITIVE = Range(0, low_open=True)
NOT_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1, 2**53)
PROBABILITY = Range(0, 1, low_open=True, high_open=True)  # a masking rate: some, never all
DROPOUT = Range(0, 1, high_open=True)
# Rows of a batch: MosaicBERT's global batch is 4096; 2^20 rows is far past any recipe.
BATCH_ROWS = Range(1, 2**20)
# A row's tokens: ALiBi has no position table, but one row's attention scores grow as its
# length squared; 2^16 is 8x ModernBERT's longest context.
SEQ_LEN = Range(3, 2**16, reason="two special tokens and some text, up to 65,536")
SIZE = Range(1, 2**16)  # widths and counts of a model's parts; base is 768 wide, 12 deep
LOG_INTERVAL = Range(1, 2**53)


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
    # default: the tokenizer's size rounded up to 64
    vocab_size: int | None = ranged(None, Range(1, 2**24))
    hidden_size: int | None = ranged(None, SIZE)
    num_hidden_layers: int | None = ranged(None, Range(1, 1024))
    num_attention_heads: int | None = ranged(None, SIZE)
    intermediate_size: int | None = ranged(None, Range(1, 2**18))
    hidden_dropout_prob: float | None = ranged(None, DROPOUT)
    attention_probs_dropout_prob: float | None = ranged(None, DROPOUT)
    type_vocab_size: int | None = ranged(None, SIZE)
    layer_norm_eps: float | None = ranged(None, Range(0, 1, low_open=True))
    initializer_range: float | None = ranged(None, Range(0, 1, low_open=True))
    # accepted from MosaicBERT recipes; bounds nothing
    alibi_starting_size: int | None = ranged(None, Range(1, 2**20))
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
    pretrained_model_name: str | None = ranged(None, PATH)
    # Weights to start from (ours), weights only: the optimizer, schedule and step count start
    # anew. A directory of `mosaic-pretrain export` or `import` (or a run's export_folder), or for
    # hf_bert a transformers BERT directory (save_pretrained) or hub name. Also a Composer
    # checkpoint of an earlier run, or that run's save_folder (its latest checkpoint): a new
    # phase of it, e.g. a longer max_seq_len, with its own schedule, duration, batch size and
    # data; the earlier run's folder is only read. It must hold the recipe's model (sizes,
    # feed-forward, vocabulary, tokenizer): a difference is an error.
    init_from: str | None = ranged(None, PATH)
    # With init_from a checkpoint: also take its optimizer's state (Adam's moments and step
    # counts), so the new phase continues the optimizer rather than restarting it. The learning
    # rate, betas and weight decay stay the recipe's; the schedule is the recipe's own.
    init_optimizer_state: bool = False
    # MosaicML's hf_bert key: true starts from the weights of pretrained_model_name.
    use_pretrained: bool = False
    tokenizer_name: str | None = ranged(None, PATH)  # default: the top-level tokenizer_name
    model_config: ModelConfigSection = field(default_factory=ModelConfigSection)


@dataclass
class StreamSection:
    """One source of a mixture (ours): an MDS dataset, mixed by mosaicml-streaming's `Stream`.
    At most one of proportion, repeat and choose; none: all of its samples once per epoch."""

    local: str = ranged("???", PATH)  # MDS folder (the cache when `remote` is set)
    remote: str | None = ranged(None, PATH)
    split: str | None = ranged(None, PATH)  # default: the dataset's split
    # its share of each epoch (relative to the others')
    proportion: float | None = ranged(None, POSITIVE)
    # times each of its samples is seen per epoch (0.5: half)
    repeat: float | None = ranged(None, POSITIVE)
    choose: int | None = ranged(None, AT_LEAST_ONE)  # samples drawn from it per epoch


@dataclass
class DatasetSection:
    local: str | None = ranged(
        None, PATH
    )  # MDS folder (the cache when `remote` is set); or set `streams`
    remote: str | None = ranged(None, PATH)  # s3://, gs://, ... or null to read `local` only
    split: str | None = ranged(
        None, PATH
    )  # subfolder: train / val (with streams: each stream's default)
    # Several MDS datasets mixed into one (ours), by name: {name: {local, proportion, ...}};
    # instead of local/remote. Each stream's samples are counted in the metrics.
    streams: dict[str, StreamSection] | None = None
    tokenizer_name: str | None = ranged(None, PATH)  # default: the top-level tokenizer_name
    max_seq_len: int | None = ranged(None, SEQ_LEN)  # default: the top-level max_seq_len
    shuffle: bool = False
    # default: the top-level mlm_probability
    mlm_probability: float | None = ranged(None, PROBABILITY)
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
    # loader processes per device; more than 256 would be more than any node's cores
    num_workers: int = ranged(8, Range(0, 256))


@dataclass
class OptimizerSection:
    name: OptimizerName = OptimizerName.decoupled_adamw
    lr: float = ranged(
        5.0e-4,
        Range(
            0, 1, low_open=True, warn_above=0.01,
            reason="an Adam step moves each weight by about lr",
            warning="far above any BERT recipe's peak (MosaicBERT: 5e-4); expect divergence",
        ),
    )  # fmt: skip
    betas: list[float] = ranged(
        rule=Items(Range(0, 1, high_open=True), length=2), default_factory=lambda: [0.9, 0.98]
    )
    eps: float = ranged(1.0e-6, Range(0, 1, low_open=True))
    # Decoupled: each step multiplies every weight by 1 - weight_decay x (lr / peak lr), so 1
    # or more would zero or flip the weights.
    weight_decay: float = ranged(1.0e-5, Range(0, 1, high_open=True))
    # Also decay the expanded activations' gate ranges (ours); off: decay would pull them to 0,
    # back to the unexpanded function.
    weight_decay_gate_ranges: bool = False


@dataclass
class SchedulerSection:
    """The learning rate over a run, as a multiple of optimizer.lr (the peak). A resumed run
    continues its schedule; a new phase (model.init_from) starts its own."""

    name: SchedulerName = SchedulerName.linear_decay_with_warmup
    # warmup length: a time string, `dur` = fraction of max_duration
    t_warmup: str = ranged("0.06dur", TimeRange(("ba", "sp", "tok", "ep", "dur"), zero_ok=True))
    alpha_f: float = ranged(0.02, Range(0, 1))  # final LR as a fraction of the peak
    # warmup_stable_decay only: the decay at the end of the run (in dur, or max_duration's
    # unit), default 0.2dur; the stable phase is what lies between warmup and decay.
    t_decay: str | None = ranged(None, TimeRange(("ba", "sp", "tok", "dur")))
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
    window_size: int = ranged(100, Range(1, 2**20))  # batches averaged for throughput and MFU
    # Peak FLOP/s of one device for MFU; default: Composer's table (A100, H100, H200) for the
    # run's precision. Set it for other devices (an H100's bf16 peak is about 1e15).
    gpu_flops_available: float | None = ranged(None, Range(0, 1e18, low_open=True))


@dataclass
class EmptySection:
    """A callback with no options: `lr_monitor: {}` switches it on."""


@dataclass
class OptimizerMonitorSection:
    """Gradient L2 norms (global and per layer)."""

    batch_log_interval: int = ranged(10, LOG_INTERVAL)
    log_optimizer_metrics: bool = False  # also per-layer moment, parameter and update norms


@dataclass
class GateRangeMonitorSection:
    """The expanded activations' gate ranges (mean, spread, min, max over blocks); always on,
    silent for models without them (ours)."""

    batch_log_interval: int = ranged(10, LOG_INTERVAL)


@dataclass
class GlueSweepSection:
    """GLUE during pretraining (ours): at each point (every `interval`, and at the end) the
    model's weights are copied to RUN/glue_points/POINT/ and finetuned with the `sweep`; the
    scores are logged against the pretraining clock. Points are independent of save_interval,
    and the copy outlives Composer's keep-N rotation until its sweep has finished."""

    # A GLUE sweep YAML (e.g. configs/glue/mosaic-bert-base.yaml). Its starting_point,
    # output_folder and run_name are replaced by each point's weights, folder and name.
    sweep: str = ranged("???", PATH)
    sweep_overrides: list[str] = field(default_factory=list)  # key=value, e.g. tasks=[sst2]
    # a point every N ba, sp or tok (e.g. 2000ba); null: at_end only
    interval: str | None = ranged(
        None, TimeRange(("ba", "sp", "tok"), reason="points are taken at batch ends")
    )
    at_end: bool = True  # a point at the end of training
    # GPU ids set aside for the sweeps, which then run while training goes on. Empty: the
    # sweeps run after training, on the training device (one process only).
    gpus: list[int] = ranged(rule=Items(Range(0, 1023)), default_factory=list)
    # Training pauses at each point until its sweep has finished (one process only).
    wait_for_sweeps: bool = False
    # a failed sweep runs again this many times (finished jobs are kept)
    retries: int = ranged(1, Range(0, 100))
    # price of one device-hour of training: adds a cost
    gpu_hour_price: float | None = ranged(None, NOT_NEGATIVE)
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
    spike_factor: float | None = ranged(None, Range(1, low_open=True))
    window: int = ranged(50, Range(1, 2**20))
    # with action skip: stop after this many skipped batches
    max_skipped_batches: int = ranged(10, Range(0, 2**53))


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
    seeds: list[int] = ranged(rule=Items(SEED), default_factory=list)  # default: the recipe's
    output_folder: str = ranged(
        "./runs/{run_name}", PATH
    )  # a folder per run, and the table and plot


@dataclass
class FolderLockSection:
    """The lock a run holds on its save folder (ours): a second run into it is refused. A lock
    of this host whose process is gone is taken over; another host's process cannot be checked
    from here, so its lock counts as live while its holder keeps refreshing it (every 30 s)."""

    # Minutes without a refresh after which another host's lock counts as left by a dead run
    # (at least 2); null: never, only take_over frees it.
    other_host_timeout_minutes: float | None = ranged(
        10.0, Range(2, 10**6, reason="a live run refreshes its lock every 30 s")
    )
    # Take over another host's lock now, for a run known to be dead (its node gone) before the
    # timeout; never frees a lock whose process runs on this host.
    take_over: bool = False


@dataclass
class PretrainConfig:
    """A pretraining recipe. `???` marks a key the recipe must set."""

    run_name: str = ranged("???", PATH)
    seed: int = ranged(17, SEED)
    precision: Precision = Precision.amp_bf16
    max_seq_len: int = ranged(128, SEQ_LEN)
    tokenizer_name: str = ranged("bert-base-uncased", PATH)
    mlm_probability: float = ranged(0.3, PROBABILITY)  # training rate; eval sets its own (0.15)
    # Mask whole words (all pieces of a chosen word, one 80/10/10 choice per word) at the same
    # expected share of tokens (ours); needs a tokenizer that marks word pieces (## or ▁).
    mlm_whole_word: bool = False
    # The published recipes define these two and refer to them with ${data_local}.
    data_local: str | None = ranged(None, PATH)
    data_remote: str | None = ranged(None, PATH)
    max_duration: str = ranged("???", TimeRange())  # e.g. 286720000sp
    eval_interval: str = ranged("2000ba", TimeRange(zero_ok=True, zero_means="no evaluation"))
    # batches of the eval set per evaluation; -1: all of it
    eval_subset_num_batches: int = ranged(-1, Range(1, 2**53, special=(-1,)))
    global_train_batch_size: int = ranged(4096, BATCH_ROWS)  # across all devices
    device_train_microbatch_size: int | str = ranged(128, BATCH_ROWS)  # per device, or auto
    device_eval_batch_size: int = ranged(128, BATCH_ROWS)
    save_folder: str | None = ranged(None, PATH)  # may contain {run_name}
    save_interval: str = ranged("3500ba", TimeRange())
    # Checkpoints kept in save_folder (older ones are deleted); -1: all. 0 keeps none, so a run
    # could never be continued: legal (Composer's meaning), but warned about.
    save_num_checkpoints_to_keep: int = ranged(
        1,
        Range(
            0, 2**20, special=(-1,), special_meaning="all", warn_at=(0,),
            warning="no checkpoint is kept in save_folder, so the run cannot be continued",
        ),
    )  # fmt: skip
    load_path: str | None = ranged(None, PATH)  # checkpoint to resume from
    # At the end of training, write a Hugging Face directory here (may contain {run_name}; ours).
    export_folder: str | None = ranged(None, PATH)
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
    console_log_interval: str = ranged(
        "1ba", TimeRange(("ba",), reason="the console logs every N batches")
    )
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
