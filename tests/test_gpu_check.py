"""The prepared GPU check (`scripts/gpu_check.sh`): its dry run, end to end on the CPU, must write
every file a lent GPU machine sends back, in the benchmark's format; and its parts must carry on
without Composer and stop at their timeouts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic_pretrain.bench.gpu_check import (
    DRY_PLAN,
    OUTPUT_FILES,
    GpuCheck,
    configurations,
)
from mosaic_pretrain.bench.gpu_check_runner import Runner
from tests.test_bench import REQUIRED_ROW_KEYS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run shared by the checks below (it is the slow part: about two minutes)."""
    folder = tmp_path_factory.mktemp("gpu_check")
    out = folder / "out"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done, out


@pytest.mark.slow
def test_dry_run_exits_0_and_prints_the_summary_last(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.endswith((out / "summary.md").read_text())


@pytest.mark.slow
def test_dry_run_writes_only_what_a_lent_machine_sends_back(dry_run):
    _, out = dry_run
    written = sorted(path.name for path in out.iterdir())
    assert written == sorted(OUTPUT_FILES)
    assert len(written) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in written)
    assert all((out / name).is_file() and (out / name).stat().st_size > 0 for name in written)


@pytest.mark.slow
def test_dry_run_runs_every_part_and_measures_every_configuration(dry_run):
    _, out = dry_run
    record = json.loads((out / "training_step.json").read_text())
    assert {"device", "torch", "date", "results", "end_to_end"} <= record.keys()
    parts = {part["part"]: part["status"] for part in record["gpu_check"]["parts"]}
    assert parts.pop("install").startswith("skipped")
    assert set(parts.values()) == {"ok"}, parts
    rows = {(r["model"], r["backend"], r["compiled"]): r for r in record["results"]}
    assert list(rows) == configurations(DRY_PLAN)
    assert all(row.keys() >= REQUIRED_ROW_KEYS for row in rows.values())
    for key, row in rows.items():
        if key[1] == "flash_attn":  # not installed here
            assert row["status"].startswith("skipped: flash-attn")
            continue
        assert row["status"] == "ok", (key, row["status"])
        assert row["step_ms"] > 0 and row["tokens_per_s"] > 0
        assert row["optimizer"] == "decoupled_adamw"  # Composer imports here
    e2e = record["end_to_end"]
    assert e2e["status"] == "ok" and e2e["batches"] == DRY_PLAN.end_to_end_batches
    assert e2e["tokens_per_s"] > 0 and e2e["ratio_to_bare_step"] > 0
    markdown = (out / "training_step.md").read_text()
    assert "| mosaic_bert | sdpa | True | host |" in markdown and "End to end" in markdown


@pytest.mark.slow
def test_dry_run_records_versions_and_the_gpu_tests(dry_run):
    _, out = dry_run
    versions = json.loads((out / "versions.json").read_text())
    assert versions["python"] and versions["torch"] and versions["composer_error"] is None
    assert {"composer", "streaming", "transformers", "tokenizers", "flash_attn"} <= set(
        versions["versions"]
    )
    assert versions["versions"]["flash_attn"] == "not installed"
    # No GPU here: every GPU test is collected and skipped.
    record = json.loads((out / "training_step.json").read_text())
    assert re.fullmatch(r"\d+ skipped, \d+ deselected", record["gpu_check"]["pytest_gpu"])
    assert "skipped" in (out / "pytest_gpu.log").read_text()
    log = (out / "gpu_check.log").read_text()
    assert "----- output of end_to_end -----" in log and "mosaic_pretrain train" in log


def test_without_composer_the_step_uses_torch_adamw_and_the_trainer_run_is_skipped(tmp_path):
    check = GpuCheck(DRY_PLAN, tmp_path, tmp_path, site=None)
    (tmp_path / "gpu_check.log").write_text("")
    check.probe = {
        "composer_error": "ModuleNotFoundError: No module named 'torchvision'",
        "trainer_error": None,
    }
    check.data = {"mds": "unused"}
    assert check.optimizer == "adamw"
    check.run_end_to_end()
    assert check.end_to_end["status"].startswith("skipped: Composer's Trainer cannot run here")
    assert "torchvision" in check.end_to_end["status"]


def test_the_step_can_time_torch_adamw(tmp_path):
    import torch

    from mosaic_pretrain.bench.training_step import measure
    from tests.conftest import make_ids

    ids, mask = make_ids([8, 5], 8, vocab_size=2048)
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    overrides = {"num_hidden_layers": 1}
    result = measure(
        "mosaic_bert", "sdpa", False, [batch], torch.device("cpu"), 1, 0, (None, None),
        preset="mini", overrides=overrides, optimizer="adamw",
    )  # fmt: skip
    assert result.status == "ok" and result.optimizer == "adamw" and result.step_ms > 0
    assert result.mfu is None and result.mfu_vs_matmul_ceiling is None


def test_a_part_past_its_timeout_is_killed_and_one_without_time_is_not_started(tmp_path):
    runner = Runner(tmp_path / "log", tmp_path, dict(os.environ), 30, 0, tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert runner.run("slow", sleeper, budget_s=1, floor_s=0).status == "timed out after 1 s"
    assert runner.run("late", sleeper, budget_s=60, floor_s=300).status.startswith("skipped: ")
    failing = [sys.executable, "-c", "raise SystemExit('no such kernel')"]
    assert runner.run("bad", failing, 10, 0).status == "failed (exit 1): no such kernel"


def test_a_python_without_torch_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import importlib.util

    from mosaic_pretrain.bench import gpu_check

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("gpu_check: error: ") and "has no torch" in line
    assert not (tmp_path / "out").exists()  # nothing written, nothing to read back
