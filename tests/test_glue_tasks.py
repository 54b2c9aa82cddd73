"""GLUE task readers: every GLUE TSV layout, the stand-in tasks, and bad files."""

import pytest

from mosaic_pretrain.data.glue_tasks import GLUE_TASKS, TaskSpec, read_hub, read_local
from mosaic_pretrain.errors import DataError
from tests.glue_helpers import NLI, QNLI, STANDINS, pairs, singles, write_glue_layouts, write_tsv


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    return write_glue_layouts(tmp_path_factory.mktemp("glue"))


def test_every_glue_layout_reads_its_sentences_and_labels(glue_root):
    expected_pairs = pairs("dev")
    expected_singles = singles("dev")
    for name, spec in GLUE_TASKS.items():
        data = read_local(spec, glue_root)
        assert set(data.dev) == set(spec.dev_splits), name
        dev = data.dev[spec.dev_splits[0]]
        if len(spec.text_columns) == 1:
            assert dev.texts == [(text,) for text, _ in expected_singles], name
            assert dev.labels == [int(label) for _, label in expected_singles], name
            continue
        first = expected_pairs[: len(dev)]
        assert dev.texts == [(a, b) for a, b, _ in first], name
        if name == "stsb":
            assert dev.labels == pytest.approx([4.2 * int(q) + 0.4 for *_, q in first], abs=1e-3)
        elif name == "mnli":
            ids = [spec.labels.index(NLI[q]) for *_, q in first]
            assert dev.labels == ids and set(ids) == {0, 2}  # entailment, contradiction
        elif name in ("qnli", "rte"):
            assert dev.labels == [spec.labels.index(QNLI[q]) for *_, q in first]
        else:
            assert dev.labels == [int(q) for *_, q in first], name
    mnli = read_local(GLUE_TASKS["mnli"], glue_root)
    assert (len(mnli.dev["m"]), len(mnli.dev["mm"])) == (50, 50)


def test_a_byte_order_mark_before_the_mrpc_header_is_ignored(tmp_path):
    (tmp_path / "MRPC").mkdir()
    for split in ("train", "dev"):
        text = (STANDINS / "MRPC" / f"{split}.tsv").read_text(encoding="utf-8")
        (tmp_path / "MRPC" / f"{split}.tsv").write_text("\ufeff" + text, encoding="utf-8")
    assert len(read_local(GLUE_TASKS["mrpc"], tmp_path).train) == 200


def test_a_missing_folder_file_or_column_names_what_is_missing(tmp_path, glue_root):
    with pytest.raises(DataError, match=r"task rte: no folder .*RTE.*GLUE TSV"):
        read_local(GLUE_TASKS["rte"], tmp_path)
    (tmp_path / "SST-2").mkdir()
    write_tsv(tmp_path / "SST-2" / "train.tsv", ["sentence", "label"], [["good", "1"]])
    with pytest.raises(DataError, match=r"SST-2/dev.tsv does not exist"):
        read_local(GLUE_TASKS["sst2"], tmp_path)
    write_tsv(tmp_path / "SST-2" / "dev.tsv", ["text", "label"], [["good", "1"]])
    with pytest.raises(DataError, match=r"dev.tsv has no column 'sentence'.*'text', 'label'"):
        read_local(GLUE_TASKS["sst2"], tmp_path)


def test_a_label_outside_the_label_set_names_file_and_line(tmp_path):
    rows = [["fine", "1"], ["bad", "0"], ["odd", "2"]]
    write_tsv(tmp_path / "SST-2" / "train.tsv", ["sentence", "label"], rows)
    write_tsv(tmp_path / "SST-2" / "dev.tsv", ["sentence", "label"], rows[:2])
    with pytest.raises(DataError, match=r"train.tsv:4: label '2' is not one of .*0, 1"):
        read_local(GLUE_TASKS["sst2"], tmp_path)


def test_short_rows_and_non_numeric_regression_labels_are_refused(tmp_path):
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score"
    write_tsv(tmp_path / "STS-B" / "train.tsv", header.split(), [["0", "main", "a"]])
    with pytest.raises(DataError, match=r"train.tsv:2: 3 columns, task stsb needs at least 10"):
        read_local(GLUE_TASKS["stsb"], tmp_path)
    row = ["0", "main", "f", "2012", "0", "s", "s", "a", "b", "high"]
    write_tsv(tmp_path / "STS-B" / "train.tsv", header.split(), [row])
    with pytest.raises(DataError, match=r"label 'high' of regression task stsb is not a number"):
        read_local(GLUE_TASKS["stsb"], tmp_path)


def test_a_headerless_file_needs_column_positions(tmp_path):
    spec = TaskSpec("mine", "MINE", ("text",), "1", ("0", "1"), ("accuracy",), header=False)
    write_tsv(tmp_path / "MINE" / "train.tsv", None, [["a", "1"]])
    with pytest.raises(DataError, match=r"column 'text' must be a 0-based position"):
        read_local(spec, tmp_path)


def test_the_hub_without_network_fails_in_one_line_saying_how_to_work_offline():
    with pytest.raises(DataError, match=r"cannot load nyu-mll/glue \(sst2, train\).*data.source"):
        read_hub(GLUE_TASKS["sst2"])


def test_subsets_are_seeded_and_keep_file_order(glue_root):
    train = read_local(GLUE_TASKS["sst2"], glue_root).train
    subset = train.subset(20)
    assert len(subset) == 20 and subset.texts == train.subset(20).texts
    positions = [train.texts.index(text) for text in subset.texts]
    assert positions == sorted(positions)
    assert train.subset(None) is train and train.subset(10_000) is train
