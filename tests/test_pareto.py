"""`mosaic-pretrain pareto` on made-up results with a known answer: the frontier (ties, a
dominated point, several series), error bars over seeds and over runs, and bad input."""

import csv
import json
from pathlib import Path

import pytest

from mosaic_pretrain.cli import main
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.glue.pareto import pareto, pareto_front
from mosaic_pretrain.glue.points import POINTS_FOLDER, RESULTS_FILE


def test_the_frontier_keeps_points_nothing_beats_on_both_axes():
    xs = [1, 2, 2, 3, 4, 4, 5]
    ys = [50, 60, 55, 60, 70, 70, 65]
    # (2, 55): same cost as (2, 60), lower score. (3, 60): costlier than (2, 60), no better.
    # The two (4, 70) tie: neither beats the other. (5, 65): beaten by (4, 70).
    assert pareto_front(xs, ys) == [True, True, False, False, True, True, False]
    assert pareto_front([], []) == []
    assert pareto_front([3.0], [1.0]) == [True]


def row(point, batches, hours, average, run_name, sst2_std=2.0, cost=None, status="ok"):
    clock = {
        "batches": batches,
        "samples": 8 * batches,
        "tokens": 1000 * batches,
        "wall_hours": hours,
        "devices": 2,
        "gpu_hours": 2 * hours,
        "cost": cost,
    }
    base = {"point": point, "status": status, "run_name": run_name, "clock": clock}
    if status != "ok":
        return {**base, "error": "1 of 1 jobs failed"}
    tasks = {
        "sst2": {"score": average + 1, "std": sst2_std, "n": 2, "glue": True},
        "mrpc": {"score": average - 1, "std": 1.0, "n": 2, "glue": True},
        "vader": {"score": 30.0, "std": 0.0, "n": 1, "glue": False},
    }
    return {**base, "glue_average": average, "glue_average_tasks": ["sst2", "mrpc"], "tasks": tasks}


def write_run(folder: Path, rows: list[dict]) -> Path:
    points = folder / POINTS_FOLDER
    points.mkdir(parents=True)
    (points / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_two_runs_are_drawn_with_the_frontier_marked(tmp_path):
    # MosaicBERT: faster to each score. The baseline reaches the best score, but later.
    mosaic = write_run(
        tmp_path / "mosaic",
        [
            row("ba100", 100, 1.0, 70.0, "mosaic-bert"),
            row("ba200", 200, 2.0, 78.0, "mosaic-bert"),
            row("ba300", 300, 3.0, 78.0, "mosaic-bert"),  # no better, costlier: dominated
            row("ba400", 400, 4.0, 0.0, "mosaic-bert", status="failed"),
        ],
    )
    baseline = write_run(
        tmp_path / "bert",
        [
            row("ba100", 100, 1.5, 65.0, "hf-bert"),
            row("ba200", 200, 3.0, 75.0, "hf-bert"),
            row("ba300", 300, 4.5, 80.0, "hf-bert"),
        ],
    )
    output = pareto([mosaic, baseline], x="wall_hours", out=tmp_path / "out")
    rows = read_csv(output.csv)
    flags = {(r["series"], r["point"]): (r["frontier"], r["series_frontier"]) for r in rows}
    assert flags == {
        ("hf-bert", "ba100"): ("0", "1"),
        ("hf-bert", "ba200"): ("0", "1"),
        ("hf-bert", "ba300"): ("1", "1"),
        ("mosaic-bert", "ba100"): ("1", "1"),
        ("mosaic-bert", "ba200"): ("1", "1"),
        ("mosaic-bert", "ba300"): ("0", "0"),
    }
    assert output.failed == {str(mosaic / POINTS_FOLDER): ["ba400"]}
    assert output.png.stat().st_size > 10_000
    # One run per series: the error bar is the seeds' spread (sst2 std 2, mrpc std 1).
    first = rows[3]  # mosaic-bert ba100
    assert first["spread"] == "seeds" and float(first["y_std"]) == pytest.approx(
        5**0.5 / 2, abs=1e-4
    )
    assert first["x_wall_hours"] == "1" and first["gpu_hours"] == "2"

    # Another axis and one task, from the command line.
    out = tmp_path / "cli"
    assert main(["pareto", str(mosaic), str(baseline), "--x", "tokens", "--task", "sst2",
                 "--out", str(out)]) == 0  # fmt: skip
    by_task = read_csv(out / "pareto-sst2-tokens.csv")
    assert [float(r["y_sst2"]) for r in by_task] == [66.0, 76.0, 81.0, 71.0, 79.0, 79.0]
    assert [r["frontier"] for r in by_task] == ["0", "0", "1", "1", "1", "0"]


def test_runs_with_one_label_are_averaged_with_their_spread(tmp_path):
    first_run = [row("ba100", 100, 1.0, 70.0, "a"), row("ba200", 200, 2.0, 74.0, "a")]
    runs = [
        write_run(tmp_path / "a", first_run),
        write_run(tmp_path / "b", [row("ba100", 100, 1.2, 72.0, "b")]),
    ]
    output = pareto(runs, labels=["mosaic", "mosaic"], out=tmp_path / "out")
    first, second = output.points
    assert (first.runs, first.x, first.y, first.spread) == (2, pytest.approx(1.1), 71.0, "runs")
    assert first.y_std == pytest.approx(2**0.5) and first.x_std == pytest.approx(0.02**0.5)
    assert (second.runs, second.spread) == (1, "seeds")


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    good = write_run(tmp_path / "good", [row("ba100", 100, 1.0, 70.0, "a")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty has no finished GLUE points"):
        pareto([good, empty], out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"recorded no cost .* --gpu-hour-price PRICE"):
        pareto([good], x="cost", out=tmp_path / "out")
    priced = pareto([good], x="cost", out=tmp_path / "out", price=3.0)
    assert priced.points[0].x == pytest.approx(6.0)  # 2 GPU-hours at 3.0
    recorded = write_run(tmp_path / "priced", [row("ba100", 100, 1.0, 70.0, "p", cost=9.0)])
    assert pareto([recorded], x="cost", out=tmp_path / "out", price=3.0).points[0].x == 9.0
    with pytest.raises(ConfigError, match=r"has no task 'cola'; choose from sst2, mrpc, vader"):
        pareto([good], task="cola", out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"2 labels for 1 runs"):
        pareto([good], labels=["a", "b"], out=tmp_path / "out")
    custom_only = row("ba100", 100, 1.0, 70.0, "c")
    custom_only["glue_average"] = None
    only = write_run(tmp_path / "custom", [custom_only])
    with pytest.raises(ConfigError, match=r"no GLUE average .* choose one with --task"):
        pareto([only], out=tmp_path / "out")
    capsys.readouterr()
    assert main(["pareto", str(empty)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
