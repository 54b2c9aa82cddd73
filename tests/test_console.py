"""What a person sees at the console: the concise training lines (checked against the metrics file
at a fixed seed), no per-parameter norms or library chatter, the closing summary and summary.json,
a second run of the same command, a run that evaluates nothing, the live line and the long form."""

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic_pretrain.callbacks.console import clock, compact, eval_line, train_figures
from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE
from mosaic_pretrain.cli import configure_logging
from mosaic_pretrain.train.summary import SUMMARY_FILE, reached

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "pretrain" / "smoke.yaml"
QUICK = [
    "model.model_config.num_hidden_layers=1",
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
    "device_eval_batch_size=32",
    "eval_subset_num_batches=2",
    "callbacks.speed_monitor.window_size=2",
    "callbacks.optimizer_monitor.batch_log_interval=2",
]


def run_command(*args: str) -> subprocess.CompletedProcess:
    """`mosaic-pretrain ...` as a user runs it: its own process, output to pipes (no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "mosaic_pretrain", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=600,
    )


def smoke_command(folder: Path, data: Path, *overrides: str) -> list[str]:
    return [
        "train", str(SMOKE), *QUICK, f"data_local={data}",
        f"save_folder={folder}/checkpoints", f"export_folder={folder}/hf", *overrides,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "public-domain-en"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A 6-batch run of the smoke recipe, a console line every 2 batches."""
    folder = tmp_path_factory.mktemp("run")
    overrides = ["max_duration=6ba", "eval_interval=6ba", "save_interval=3ba",
                 "console_log_interval=2ba"]  # fmt: skip
    done = run_command(*smoke_command(folder, data, *overrides))
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done, overrides


def metric_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "checkpoints" / METRICS_FILE).open()]


def values_at(rows: list[dict], step: int) -> dict:
    merged = {}
    for row in rows:
        if row["step"] == step:
            merged.update(row)
    return merged


# Logged when a batch ends, at the step of the batch that follows (the timestamp has moved on).
AT_BATCH_END = ("lr-", "l2_norm/", "throughput/")


def seen_at_end_of(rows: list[dict], batch: int) -> dict:
    """The latest value of each key when `batch` ended, as the console holds them: the training
    step logs at step batch - 1 (steps count from 0), the monitors at step `batch`."""
    seen = {}
    for step in range(batch):
        seen.update(values_at(rows, step))
    ended = values_at(rows, batch)
    seen.update({key: value for key, value in ended.items() if key.startswith(AT_BATCH_END)})
    return seen


@pytest.mark.slow
def test_console_lines_hold_the_logged_figures(finished):
    folder, done, _ = finished
    lines = [line for line in done.stderr.splitlines() if line.startswith("[batch ")]
    assert [int(re.match(r"\[batch (\d+)/6 ", line)[1]) for line in lines] == [1, 2, 4, 6]
    rows = metric_rows(folder)
    totals = json.loads((folder / "checkpoints" / SUMMARY_FILE).read_text())["totals"]
    pattern = re.compile(
        r"\[batch (\d+)/6  (\d+\.\d)%\] tokens (\S+) \| (.*?)"
        r"(?: \| (\S+) tok/s)? \| elapsed \d+:\d\d:\d\d(?: \| ETA \d+:\d\d:\d\d)?$"
    )
    for line in lines:
        match = pattern.match(line)
        assert match, line
        batch = int(match[1])
        logged = seen_at_end_of(rows, batch)
        assert float(match[2]) == pytest.approx(100 * batch / 6, abs=0.05)
        # time/token is logged as a batch starts: the tokens after batch b are at step b.
        after = values_at(rows, batch) if batch < 6 else {"time/token": totals["tokens"]}
        assert match[3] == compact(after["time/token"])
        # The figures are the logged values, formatted as documented, in the documented order.
        expected = [f for f in train_figures(logged) if not f.endswith("tok/s")]
        assert match[4] == " | ".join(expected)
        assert match[4].startswith(f"loss {logged['loss/train/total']:.4g} | acc ")
        if "throughput/tokens_per_sec" in logged:
            assert match[5] == compact(logged["throughput/tokens_per_sec"])
    assert "grad " in lines[1] and "grad " not in lines[0]  # the monitor logs every 2 batches
    [evaluation] = [line for line in done.stderr.splitlines() if line.startswith("[eval")]
    assert evaluation == eval_line(6, values_at(rows, 6))  # logged after batch 6 ended
    assert re.fullmatch(r"\[eval @ batch 6\] loss \d+\.\d{4} \| acc \d+\.\d\d%", evaluation)


@pytest.mark.slow
def test_per_parameter_norms_and_chatter_stay_off_the_console(finished):
    from mosaic_pretrain.model import MosaicBertForMaskedLM

    folder, done, _ = finished
    console = done.stdout + done.stderr
    assert "l2_norm" not in console and "Train time/" not in console
    assert not re.search(r"^INFO (streaming|composer)", console, re.M)
    assert "Config:" not in console and "resolved recipe" not in console
    assert "INFO mosaic_pretrain.model.modeling: MosaicBERT attention: sdpa" in console
    logged = set().union(*(row.keys() for row in metric_rows(folder)))
    model = MosaicBertForMaskedLM.from_pretrained(folder / "hf")
    per_parameter = {f"l2_norm/grad/model.{name}" for name, _ in model.named_parameters()}
    assert len(per_parameter) == 20 and per_parameter <= logged  # every norm kept in the file
    assert "l2_norm/grad/global" in logged


@pytest.mark.slow
def test_the_summary_is_printed_and_written(finished):
    folder, done, _ = finished
    summary = json.loads((folder / "checkpoints" / SUMMARY_FILE).read_text())
    rows = metric_rows(folder)
    last = values_at(rows, 5)
    assert summary["run_name"] == "smoke"
    # time/token is logged as a batch starts: batch 6 adds at most 8 x 128 real tokens to it.
    assert summary["totals"]["batches"] == 6 and summary["totals"]["samples"] == 48
    assert last["time/token"] < summary["totals"]["tokens"] <= last["time/token"] + 8 * 128
    session = summary["session"]
    assert session["batches"] == 6 and session["tokens"] == summary["totals"]["tokens"]
    assert session["real_tokens_per_second"] == pytest.approx(
        session["tokens"] / session["wall_seconds"], rel=0.01
    )
    assert summary["evaluated"] is True
    evaluation = values_at(rows, 6)  # logged after batch 6 ended
    assert summary["eval"]["loss"] == pytest.approx(evaluation["metrics/eval/LanguageCrossEntropy"])
    assert summary["eval"]["batch"] == 6
    assert summary["train"]["loss"] == pytest.approx(last["loss/train/total"])
    assert summary["mfu"] is None  # no peak is known for a CPU: said, not guessed
    files = summary["files"]
    assert Path(files["latest_checkpoint"]).name == "ep0-ba6-rank0.pt"
    for key in ("checkpoints", "export", "metrics", "curves", "recipe", "summary"):
        assert Path(files[key]).exists(), key
    out = done.stdout
    assert "run smoke finished" in out
    assert f"eval         MLM loss {summary['eval']['loss']:.4f}" in out
    assert f"export       {folder}/hf" in out and "MFU unknown" in out
    assert "nan" not in out.lower()


@pytest.mark.slow
def test_running_the_same_command_again_shows_the_summary_and_changes_nothing(finished, data):
    folder, _, overrides = finished
    summary = (folder / "checkpoints" / SUMMARY_FILE).read_bytes()
    before = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    again = run_command(*smoke_command(folder, data, *overrides))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train: smoke reached max_duration=6ba before" in again.stdout
    assert "run smoke finished" in again.stdout
    assert (folder / "checkpoints" / SUMMARY_FILE).read_bytes() == summary
    changed = {p for p, mtime in before.items() if p.exists() and p.stat().st_mtime_ns != mtime}
    assert {p.name for p in changed} <= {"resolved_config.yaml"}  # rewritten, same content
    # Asking for more of a run whose export exists stops before training, with what to do.
    longer = run_command(*smoke_command(folder, data, "max_duration=8ba"))
    assert longer.returncode == 2
    assert f"export_folder {folder}/hf already exists; remove it or set another" in longer.stderr
    assert not (folder / "checkpoints" / "ep0-ba8-rank0.pt").exists()


@pytest.mark.slow
def test_a_run_without_evaluation_says_so_and_never_prints_nan(tmp_path, data):
    done = run_command(*smoke_command(tmp_path, data, "max_duration=2ba", "eval_interval=0ba",
                                      "progress_bar=true"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing was evaluated in this session (eval_interval=0ba)" in done.stdout
    assert "tokens per batch, no evaluation (eval_interval=0ba)" in done.stdout  # the header
    assert "nan" not in (done.stdout + done.stderr).lower()
    summary = json.loads((tmp_path / "checkpoints" / SUMMARY_FILE).read_text())
    assert summary["evaluated"] is False and summary["eval"] is None
    # progress_bar=true: tqdm's live line with our figures, not a line per interval.
    assert re.search(r"train: 100%\|.*\| 2/2 \[.*ba/s, tokens \S+ \| loss ", done.stderr)
    assert "[batch " not in done.stderr


@pytest.mark.slow
def test_console_metrics_all_brings_back_the_long_form(tmp_path, data):
    overrides = ["max_duration=2ba", "eval_interval=2ba", "console_metrics=all"]
    done = run_command(*smoke_command(tmp_path, data, *overrides, "console_log_interval=2ba"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Train l2_norm/grad/model.bert.embeddings.word_embeddings.weight" in done.stderr
    assert "[batch " not in done.stderr


def test_console_log_interval_must_be_batches():
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"console_log_interval=1ep: write it in ba"):
        load_config(SMOKE, ["console_log_interval=1ep"])


def test_figures_show_what_was_logged_and_nothing_else():
    assert train_figures({}) == []
    logged = {
        "loss/train/total": 6.54321,
        "metrics/train/MaskedAccuracy": 0.0935,
        "l2_norm/grad/global": 1.5,
        "l2_norm/grad/model.bert.embeddings.word_embeddings.weight": 1.2,
        "lr-DecoupledAdamW/group0": 0.00095,
        "throughput/tokens_per_sec": 123456.0,
        "throughput/device/mfu": 0.4123,
    }
    assert train_figures(logged) == [
        "loss 6.543", "acc 9.35%", "grad 1.5", "lr 9.5e-04", "123k tok/s", "MFU 41.2%",
    ]  # fmt: skip
    assert train_figures({"loss/train/total": math.nan}) == []  # never a NaN as a figure
    assert eval_line(3, {}) == "[eval @ batch 3] no metric"
    assert clock(3725.4) == "1:02:05" and compact(999) == "999" and compact(1_234_567) == "1.23M"


def test_reached_reads_max_duration_in_its_unit():
    totals = {"batches": 60, "samples": 1920, "tokens": 245_000, "epochs": 0}
    assert reached("60ba", totals) and not reached("61ba", totals)
    assert reached("1920sp", totals) and not reached("2000sp", totals)
    assert reached("245000tok", totals) and not reached("1ep", totals)


def test_library_info_chatter_only_with_verbose():
    root = logging.getLogger()
    level = root.level
    try:
        configure_logging(verbose=False)
        assert not logging.getLogger("streaming.base.dataset").isEnabledFor(logging.INFO)
        assert logging.getLogger("streaming.base.dataset").isEnabledFor(logging.WARNING)
        assert logging.getLogger("mosaic_pretrain.model").isEnabledFor(logging.INFO)
        configure_logging(verbose=True)
        assert logging.getLogger("composer.trainer").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(level)
        logging.getLogger("mosaic_pretrain").setLevel(logging.NOTSET)
