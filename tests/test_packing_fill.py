"""The packing-fill benchmark's arithmetic, on lengths whose answer is known by hand."""

import pytest

from mosaic_pretrain.bench.packing_fill import fill_of_batches, results_markdown


def test_half_rows_pack_two_to_a_row():
    fill = fill_of_batches([64, 64, 64, 64, 64, 64, 64, 64, 5], max_seq_len=128, batch_size=4)
    assert fill["batches"] == 2  # the short last batch is dropped, as drop_last does
    assert fill["real_tokens"] == 8 * 64
    assert fill["fill_padded"] == pytest.approx(0.5)
    assert fill["fill_packed"] == pytest.approx(1.0)
    assert fill["rows_per_batch_packed_mean"] == 2


def test_full_rows_gain_nothing_and_mixed_rows_gain_some():
    assert fill_of_batches([128] * 4, 128, 2)["fill_packed"] == 1.0
    mixed = fill_of_batches([100, 28, 90, 50], max_seq_len=128, batch_size=4)
    # first-fit decreasing: [100, 28], [90], [50] -> 3 rows of 128 for 268 tokens
    assert mixed["rows_per_batch_packed_min"] == 3
    assert mixed["fill_packed"] == pytest.approx(268 / (3 * 128))
    assert mixed["fill_padded"] == pytest.approx(268 / (4 * 128))


def test_the_table_has_a_row_per_measurement():
    row = {"max_seq_len": 512, "batch_size": 32, "document_tokens_kept": 0.4}
    row |= {"documents_shorter_than_a_row": 0.1}
    row |= fill_of_batches([300, 200, 512, 100], 512, 4)
    table = results_markdown({"data": "d", "date": "today", "results": [row]})
    assert "| 512 | 32 | 54.3% | 72.4% | 3.0 (3-3) | 10.0% | 40.0% |" in table
