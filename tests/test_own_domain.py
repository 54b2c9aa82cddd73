"""Pretraining on your own text, end to end at tiny sizes, as the README's "Pretrain on your own
text" goes: text files -> tokenizer -> convert --tokenizer -> the own-domain recipe (a mixture of
two sources, whole-word masking) -> train -> export -> a GLUE sweep on a stand-in task."""

import json
from pathlib import Path

import pytest
import yaml

from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
from mosaic_pretrain.cli import main
from mosaic_pretrain.glue.report import REPORT_JSON
from tests.glue_helpers import STANDINS

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m 'not slow'` skips them

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke-own-domain.yaml"
TERMS = ["estoppel", "tortfeasor", "indemnity", "easement", "fiduciary", "subrogation"]


def write_text(folder: Path) -> Path:
    """Plain-text files of blank-line separated paragraphs, as a user's own corpus might be."""
    folder.mkdir()
    for number in range(3):
        paragraphs = [
            f"The court found that the {TERMS[(number + k) % 6]} of the {TERMS[k % 6]} applied "
            f"to claim {number}-{k}, and that the parties' {TERMS[(k * 5) % 6]} survived."
            for k in range(120)
        ]
        (folder / f"opinions-{number}.txt").write_text("\n\n".join(paragraphs) + "\n")
    return folder


def test_pretrain_on_your_own_text(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the recipe's relative paths, as from a user's folder
    text = write_text(tmp_path / "my-text")
    assert main(["tokenizer", "--source", str(text), "--out", "runs/my-tokenizer",
                 "--vocab-size", "1024", "--no-progress"]) == 0  # fmt: skip
    assert main(["convert", "--source", str(text), "--out", "runs/data/my-domain",
                 "--val-fraction", "0.1", "--tokenizer", "runs/my-tokenizer",
                 "--format", "tokens", "--no-progress"]) == 0  # fmt: skip
    assert main(["convert", "--out", "runs/data/public-domain-en", "--val-fraction", "0.05",
                 "--max-documents", "400", "--no-progress"]) == 0  # fmt: skip
    tiny = ["model.model_config.num_hidden_layers=1", "global_train_batch_size=8",
            "device_train_microbatch_size=8", "max_duration=4ba", "eval_interval=4ba",
            "save_interval=4ba", "log_to_console=false"]  # fmt: skip
    assert main(["check", str(RECIPE), *tiny]) == 0
    assert main(["train", str(RECIPE), *tiny]) == 0
    series = read_metrics(tmp_path / "runs/own-domain/checkpoints" / METRICS_FILE)
    drawn = [series[f"data/stream/{name}/samples"] for name in ("domain", "general")]
    assert drawn[0][max(drawn[0])] + drawn[1][max(drawn[1])] == 32
    assert series["metrics/eval/LanguageCrossEntropy"][4] > 0
    exported = tmp_path / "runs/own-domain/hf"
    config = json.loads((exported / "config.json").read_text())
    trained = json.loads((tmp_path / "runs/my-tokenizer/tokenizer_training.json").read_text())
    assert config["vocab_size"] == trained["vocabulary"]["size"]  # no rounding: a multiple of 64
    assert "mlm_whole_word: true" in (exported / "README.md").read_text()

    sweep = {
        "run_name": "own-domain-sst2",
        "starting_point": str(exported),
        "output_folder": str(tmp_path / "glue"),
        "tasks": ["sst2"],
        "data": {"source": "local", "local": str(STANDINS)},
        "task_settings": {
            "sst2": {
                "epochs": 1,
                "batch_size": 16,
                "max_train_examples": 48,
                "max_eval_examples": 40,
                "eval_interval": "2ba",
                "seeds": [1],
            }
        },
        "max_seq_len": 64,
        "eval_batch_size": 32,
        "parallel": {"workers": 1, "device": "cpu"},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert main(["glue", str(tmp_path / "sweep.yaml")]) == 0
    report = json.loads(next((tmp_path / "glue").rglob(REPORT_JSON)).read_text())
    assert 0 <= report["tasks"]["sst2"]["metrics"]["accuracy"]["mean"] <= 100
    capsys.readouterr()
