"""Learning-rate schedules: the multiplier at chosen batches against the formula written out, in
a real run (as LRMonitor logs it) and across a resume; WSD's stable-phase checkpoint."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from composer.core import Time, Timestamp, TimeUnit

from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
from mosaic_pretrain.callbacks.stable_checkpoint import decay_start
from mosaic_pretrain.config import load_config
from mosaic_pretrain.config.schema import DecayShape
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.train.schedules import WarmupStableDecayScheduler, build_scheduler
from tests.test_train import SMOKE, run

LR = 1.0e-3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "public-domain-en"


LR_KEY = "lr-DecoupledAdamW/group0"


def expected_multiplier(name: str, t: int, total: int, warmup: int, alpha_f: float, **wsd) -> float:
    """The schedules as their papers and Composer's docs state them, independently of ours."""
    if t < warmup:
        return t / warmup
    if name == "linear_decay_with_warmup":
        return 1.0 + (alpha_f - 1.0) * (t - warmup) / (total - warmup)
    if name == "cosine_with_warmup":
        x = (t - warmup) / (total - warmup)
        return alpha_f + (1.0 - alpha_f) * 0.5 * (1.0 + math.cos(math.pi * x))
    decay = wsd["decay"]
    if t < total - decay:
        return 1.0
    x = (t - (total - decay)) / decay
    shape = {
        "linear": 1.0 - x,
        "cosine": 0.5 * (1.0 + math.cos(math.pi * x)),
        "one_minus_sqrt": 1.0 - math.sqrt(x),
    }[wsd["shape"]]
    return alpha_f + (1.0 - alpha_f) * shape


def at_batch(batch: int, total: int) -> SimpleNamespace:
    """The two things a Composer scheduler reads of its State."""
    return SimpleNamespace(
        max_duration=Time(total, TimeUnit.BATCH), timestamp=Timestamp(batch=batch)
    )


@pytest.mark.parametrize("shape", list(DecayShape))
def test_warmup_stable_decay_follows_its_formula_at_every_batch(shape):
    scheduler = WarmupStableDecayScheduler("10ba", "0.25dur", 0.1, shape)
    for batch in range(0, 101):
        got = scheduler(at_batch(batch, 100))
        want = expected_multiplier("wsd", batch, 100, 10, 0.1, decay=25, shape=shape.value)
        assert got == pytest.approx(want, abs=1e-12), batch
    assert scheduler(at_batch(75, 100)) == 1.0  # the decay starts at 100 - 25


def test_warmup_given_as_a_fraction_and_the_decay_in_batches():
    scheduler = WarmupStableDecayScheduler("0.1dur", "30ba", 0.0, DecayShape.linear)
    assert scheduler(at_batch(5, 200)) == pytest.approx(0.25)  # warmup is 20 batches
    assert scheduler(at_batch(100, 200)) == 1.0
    assert scheduler(at_batch(185, 200)) == pytest.approx(0.5)  # halfway down 170 -> 200
    assert decay_start("30ba", Time(200, TimeUnit.BATCH)) == Time(170, TimeUnit.BATCH)
    assert decay_start("0.2dur", Time(1000, TimeUnit.SAMPLE)) == Time(800, TimeUnit.SAMPLE)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler.t_decay=2ba"], "applies to scheduler.name=warmup_stable_decay only"),
        (["scheduler.decay_shape=cosine"], "applies to scheduler.name=warmup_stable_decay only"),
        (["scheduler.name=warmup_stable_decay", "scheduler.t_decay=0.95dur"], "stable phase"),
        (["scheduler.name=warmup_stable_decay", "scheduler.t_decay=5tok"], "max_duration's unit"),
        (["scheduler.name=warmup_stable_decay", "scheduler.t_decay=soon"], "is not a time"),
        (["scheduler.name=warmup_stable_decay", "max_duration=1ep"], "in ba, sp or tok"),
        (["scheduler.name=step"], "scheduler.name"),
        (["scheduler.name=warmup_stable_decay", "scheduler.decay_shape=sqrt"], "one_minus_sqrt"),
        (["scheduler.t_warmup=100tok"], "cannot be placed in max_duration=60ba"),
        (["scheduler.name=warmup_stable_decay", "scheduler.t_decay=0.001dur"], "never decay"),
        (
            [
                "scheduler.name=warmup_stable_decay",
                "scheduler.t_warmup=0ba",
                "scheduler.t_decay=1dur",
            ],
            "no stable phase",
        ),
        (
            [
                "scheduler.name=warmup_stable_decay",
                "max_duration=3200sp",
                "scheduler.t_warmup=90ba",
                "scheduler.t_decay=0.2dur",
            ],
            "stable phase would be negative",
        ),
        (["scheduler.name=warmup_stable_decay", "scheduler.t_warmup=1ep"], "write it in dur or ba"),
    ],
)
def test_bad_schedules_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, overrides)


def at_sample(batch: int, total_samples: int, batch_size: int = 8) -> SimpleNamespace:
    return SimpleNamespace(
        max_duration=Time(total_samples, TimeUnit.SAMPLE),
        timestamp=Timestamp(batch=batch, sample=batch * batch_size),
    )


@pytest.mark.parametrize(
    "name", ["linear_decay_with_warmup", "cosine_with_warmup", "warmup_stable_decay"]
)
def test_a_warmup_in_batches_fits_a_run_in_samples(name):
    """Composer's warmup schedulers need one unit: 2ba of a run of 80sp (batch 8) is 16sp."""
    config = load_config(
        SMOKE,
        [f"scheduler.name={name}", "scheduler.t_warmup=2ba", "max_duration=80sp",
         "global_train_batch_size=8", "device_train_microbatch_size=8", "scheduler.alpha_f=0.0"]
        + (["scheduler.t_decay=4ba"] if name == "warmup_stable_decay" else []),
    )  # fmt: skip
    scheduler = build_scheduler(config)
    assert scheduler(at_sample(1, 80)) == pytest.approx(0.5)  # halfway through the warmup
    assert scheduler(at_sample(2, 80)) == pytest.approx(1.0)
    extra = {"decay": 4, "shape": "linear"} if name == "warmup_stable_decay" else {}
    for batch in range(2, 11):
        want = expected_multiplier(name, batch, 10, 2, 0.0, **extra)
        assert scheduler(at_sample(batch, 80)) == pytest.approx(want, abs=1e-12), batch


def test_the_stable_checkpoint_is_taken_once_where_the_recipe_decays(tmp_path, monkeypatch):
    """At the decay start of the recipe's max_duration, even if a stop asked for at that batch
    has shortened the State's; once; with the recipe beside it."""
    from composer import Event

    from mosaic_pretrain.callbacks import stable_checkpoint

    saved = []

    def save(state, filename):
        path = filename.format(epoch=0, batch=int(state.timestamp.batch), rank=0)
        saved.append(Path(path).name)
        return path

    monkeypatch.setattr(stable_checkpoint.checkpoint, "save_checkpoint", save)
    recipe = tmp_path / "resolved_config.yaml"
    recipe.write_text("run_name: x\n")
    callback = stable_checkpoint.StableCheckpoint(tmp_path, "0.2dur", "100ba", recipe)
    for batch in range(1, 101):
        state = SimpleNamespace(
            timestamp=Timestamp(batch=batch),
            previous_timestamp=Timestamp(batch=batch - 1),
            max_duration=Time(80 if batch == 80 else 100, TimeUnit.BATCH),  # stopped at 80
        )
        callback.run_event(Event.BATCH_CHECKPOINT, state, None)
        callback.run_event(Event.BATCH_END, state, None)
    assert saved == ["ep0-ba80-rank0.pt"]
    assert (tmp_path / "stable" / "resolved_config.yaml").read_text() == "run_name: x\n"


def logged_lrs(folder: Path) -> dict[int, float]:
    """LRMonitor's value at batch k (1-based) is the rate batch k trained with: time k - 1."""
    return read_metrics(folder / METRICS_FILE)[LR_KEY]


MONITOR = ["callbacks.lr_monitor={}", "eval_interval=0ba", f"optimizer.lr={LR}"]


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("linear_decay_with_warmup", {}),
        ("cosine_with_warmup", {}),
        ("warmup_stable_decay", {"decay": 4, "shape": "one_minus_sqrt"}),
    ],
)
def test_a_run_trains_with_the_rate_its_schedule_declares(corpus, tmp_path, name, extra):
    overrides = [*MONITOR, f"scheduler.name={name}", "scheduler.t_warmup=3ba"]
    overrides += ["scheduler.alpha_f=0.1", "max_duration=10ba"]
    if extra:
        overrides += [
            f"scheduler.t_decay={extra['decay']}ba",
            f"scheduler.decay_shape={extra['shape']}",
        ]
    run(corpus, tmp_path, *overrides)
    lrs = logged_lrs(tmp_path / "checkpoints")
    assert sorted(lrs) == list(range(1, 11))
    for batch, lr in lrs.items():
        want = LR * expected_multiplier(name, batch - 1, 10, 3, 0.1, **extra)
        assert lr == pytest.approx(want, rel=1e-9, abs=1e-15), batch


@pytest.mark.slow
def test_a_resumed_wsd_run_continues_its_schedule_and_keeps_its_stable_checkpoint(corpus, tmp_path):
    wsd = [*MONITOR, "scheduler.name=warmup_stable_decay", "scheduler.t_warmup=2ba"]
    wsd += ["scheduler.t_decay=4ba", "scheduler.decay_shape=cosine", "scheduler.alpha_f=0.0"]
    wsd += ["max_duration=10ba", "save_interval=3ba", "save_num_checkpoints_to_keep=1"]
    run(corpus, tmp_path / "full", *wsd)
    folder = tmp_path / "full" / "checkpoints"
    # The end of the stable phase (batch 6 of 10) is kept, though keep-1 rotated its neighbours.
    kept = sorted(p.name for p in (folder / "stable").iterdir())
    assert kept == ["ep0-ba6-rank0.pt", "resolved_config.yaml"]
    assert sorted(p.name for p in folder.glob("ep*.pt")) == ["ep0-ba10-rank0.pt"]
    full = logged_lrs(folder)
    for batch, lr in full.items():
        want = LR * expected_multiplier("wsd", batch - 1, 10, 2, 0.0, decay=4, shape="cosine")
        assert lr == pytest.approx(want, rel=1e-9, abs=1e-15), batch

    # Resumed from the stable checkpoint: the same rates for batches 7..10.
    stable = folder / "stable" / "ep0-ba6-rank0.pt"
    run(corpus, tmp_path / "resumed", *wsd, f"load_path={stable}")
    resumed = logged_lrs(tmp_path / "resumed" / "checkpoints")
    assert sorted(resumed) == [7, 8, 9, 10]
    assert resumed == pytest.approx({batch: full[batch] for batch in resumed}, rel=1e-12)

    # Decayed later: the same checkpoint resumed with a longer run stays at the peak longer.
    longer = [*wsd, "max_duration=14ba", f"load_path={stable}"]
    run(corpus, tmp_path / "later", *longer)
    later = logged_lrs(tmp_path / "later" / "checkpoints")
    assert later[7] == later[10] == LR  # the decay now starts at 14 - 4
    assert later[14] == pytest.approx(
        LR * expected_multiplier("wsd", 13, 14, 2, 0.0, decay=4, shape="cosine")
    )
