"""A compiled `mosaic-pretrain train` run, counted: one graph for training (no break, no
recompile while batch sizes change every step), one more for evaluation (inference mode).

`aot_eager` traces forward and backward as inductor does, without generating code, so this runs
in seconds; `scripts/compile_counts.py` measures the same with inductor (README, Training speed).
"""

import pytest

from mosaic_pretrain.bench.compile_counts import results_markdown, run_compile_counts

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m 'not slow'` skips them


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return run_compile_counts(("sdpa", "flex"), ("aot_eager",), folder, batches=4)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_a_compiled_run_is_one_graph_for_training_and_one_for_evaluation(counted, backend):
    [row] = [row for row in counted["results"] if row["backend"] == backend]
    assert row["status"] == "ok"
    assert row["graph_breaks"] == 0, row["break_reasons"]
    assert row["graphs"] == 2, row["recompile_reasons"]
    # The one recompile: evaluation runs without gradients.
    assert row["recompiles"] == 1 and "grad_mode" in row["recompile_reasons"][0]
    assert f"| {backend} | aot_eager | 2 | 0 | 1 |" in results_markdown(counted)
