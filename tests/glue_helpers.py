"""GLUE-layout files for the tests: the shipped stand-in tasks, and the other GLUE layouts (CoLA,
STS-B, QQP, MNLI, QNLI, RTE) written by the tests from the stand-in rows, so every reader runs on
real sentences. Labels of the rewritten files are mapped from the stand-in labels, not GLUE's."""

import csv
import shutil
from pathlib import Path

STANDINS = Path(__file__).resolve().parent / "fixtures" / "glue_format"


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(row) + "\n" for row in lines), encoding="utf-8")
    return path


def pairs(split: str) -> list[tuple[str, str, str]]:
    """(sentence1, sentence2, 0/1) from the MRPC stand-in."""
    _, rows = read_rows(STANDINS / "MRPC" / f"{split}.tsv")
    return [(row[3], row[4], row[0]) for row in rows]


def singles(split: str) -> list[tuple[str, str]]:
    """(sentence, 0/1) from the SST-2 stand-in."""
    _, rows = read_rows(STANDINS / "SST-2" / f"{split}.tsv")
    return [(row[0], row[1]) for row in rows]


NLI = {"1": "entailment", "0": "contradiction"}
QNLI = {"1": "entailment", "0": "not_entailment"}


def write_glue_layouts(root: Path) -> Path:
    """All eight GLUE folders under `root`, in their original file layouts."""
    for name in ("SST-2", "MRPC"):
        shutil.copytree(STANDINS / name, root / name, dirs_exist_ok=True)
    for split in ("train", "dev"):
        write_tsv(
            root / "CoLA" / f"{split}.tsv",
            None,
            [
                [f"src{i}", label, "" if label == "1" else "*", text]
                for i, (text, label) in enumerate(singles(split))
            ],
        )
        write_tsv(
            root / "STS-B" / f"{split}.tsv",
            [
                "index",
                "genre",
                "filename",
                "year",
                "old_index",
                "source1",
                "source2",
                "sentence1",
                "sentence2",
                "score",
            ],
            [
                [str(i), "main", "f", "2012", str(i), "s", "s", a, b, f"{4.2 * int(q) + 0.4:.3f}"]
                for i, (a, b, q) in enumerate(pairs(split))
            ],
        )
        write_tsv(
            root / "QQP" / f"{split}.tsv",
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            [
                [str(i), str(2 * i), str(2 * i + 1), a, b, q]
                for i, (a, b, q) in enumerate(pairs(split))
            ],
        )
        write_tsv(
            root / "QNLI" / f"{split}.tsv",
            ["index", "question", "sentence", "label"],
            [[str(i), a, b, QNLI[q]] for i, (a, b, q) in enumerate(pairs(split))],
        )
        write_tsv(
            root / "RTE" / f"{split}.tsv",
            ["index", "sentence1", "sentence2", "label"],
            [[str(i), a, b, QNLI[q]] for i, (a, b, q) in enumerate(pairs(split))],
        )
    mnli_head = [
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
    ]
    write_tsv(
        root / "MNLI" / "train.tsv",
        [*mnli_head, "label1", "gold_label"],
        [
            [str(i), "p", "q", "fiction", "(", "(", "(", "(", a, b, NLI[q], NLI[q]]
            for i, (a, b, q) in enumerate(pairs("train"))
        ],
    )
    dev = pairs("dev")
    for file, part in (("dev_matched.tsv", dev[:50]), ("dev_mismatched.tsv", dev[50:])):
        write_tsv(
            root / "MNLI" / file,
            [*mnli_head, "label1", "label2", "label3", "label4", "label5", "gold_label"],
            [
                [str(i), "p", "q", "fiction", "(", "(", "(", "(", a, b, *[NLI[q]] * 6]
                for i, (a, b, q) in enumerate(part)
            ],
        )
    return root
