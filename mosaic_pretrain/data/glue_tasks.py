"""GLUE tasks: what each one reads, predicts and is scored by, and the readers for its data.

Data comes from a local folder in the original GLUE TSV layout (`CoLA/`, `SST-2/`, `MRPC/`, ...
each with `train.tsv` and `dev.tsv`; MNLI has `dev_matched.tsv` and `dev_mismatched.tsv`), so a
sweep runs offline, or from the Hugging Face hub (`nyu-mll/glue`). Both give the same label ids:
the hub's ids are the positions of the label names in `TaskSpec.labels`.

Every row is checked while reading: a missing column or a label outside the task's label set is a
`DataError` naming the file and line, found before any finetuning job starts.
"""

import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mosaic_pretrain.errors import DataError, first_line

METRIC_NAMES = ("accuracy", "f1", "matthews", "pearson", "spearman")
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman")
GLUE_HUB_NAME = "nyu-mll/glue"


@dataclass(frozen=True)
class TaskSpec:
    """One sentence or sentence-pair task.

    `text_columns` and `label_column` are header names, or 0-based column positions (as digit
    strings) for files without a header. `labels` lists the class names in id order; `None` makes
    the task a one-output regression. `dev_files` maps each evaluation split's label to its file.
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    dev_files: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)
    train_file: str = "train.tsv"
    header: bool = True
    hub_config: str | None = None  # the nyu-mll/glue config; None for tasks only on disk
    hub_text_columns: tuple[str, ...] = ()
    hub_dev_splits: tuple[tuple[str, str], ...] = (("dev", "validation"),)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def dev_splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.dev_files)

    @property
    def primary_metric(self) -> str:
        """The metric that picks the best evaluation under `score_policy: best`."""
        return self.metrics[0]

    def score_keys(self) -> list[str]:
        """Names of the reported numbers: `accuracy`, or `accuracy_m` with several dev splits."""
        if len(self.dev_files) == 1:
            return list(self.metrics)
        return [f"{metric}_{split}" for split in self.dev_splits for metric in self.metrics]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        tuples = {
            key: tuple(tuple(item) if isinstance(item, list) else item for item in value)
            for key, value in data.items()
            if isinstance(value, list)
        }
        return cls(**{**data, **tuples})


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")

# The eight GLUE tasks we score (WNLI is left out, as in BERT and MosaicBERT). Column names are
# those of the GLUE TSV headers; CoLA's files have no header (source, label, original label,
# sentence).
GLUE_TASKS: dict[str, TaskSpec] = {
    "mnli": TaskSpec(
        "mnli",
        "MNLI",
        ("sentence1", "sentence2"),
        "gold_label",
        ("entailment", "neutral", "contradiction"),
        ("accuracy",),
        dev_files=(("m", "dev_matched.tsv"), ("mm", "dev_mismatched.tsv")),
        hub_config="mnli",
        hub_text_columns=("premise", "hypothesis"),
        hub_dev_splits=(("m", "validation_matched"), ("mm", "validation_mismatched")),
    ),
    "qnli": TaskSpec(
        "qnli",
        "QNLI",
        ("question", "sentence"),
        "label",
        _ENTAILMENT,
        ("accuracy",),
        hub_config="qnli",
        hub_text_columns=("question", "sentence"),
    ),
    "qqp": TaskSpec(
        "qqp",
        "QQP",
        ("question1", "question2"),
        "is_duplicate",
        _BINARY,
        ("accuracy", "f1"),
        hub_config="qqp",
        hub_text_columns=("question1", "question2"),
    ),
    "sst2": TaskSpec(
        "sst2",
        "SST-2",
        ("sentence",),
        "label",
        _BINARY,
        ("accuracy",),
        hub_config="sst2",
        hub_text_columns=("sentence",),
    ),
    "cola": TaskSpec(
        "cola",
        "CoLA",
        ("3",),
        "1",
        _BINARY,
        ("matthews",),
        header=False,
        hub_config="cola",
        hub_text_columns=("sentence",),
    ),
    "stsb": TaskSpec(
        "stsb",
        "STS-B",
        ("sentence1", "sentence2"),
        "score",
        None,
        ("pearson", "spearman"),
        hub_config="stsb",
        hub_text_columns=("sentence1", "sentence2"),
    ),
    "mrpc": TaskSpec(
        "mrpc",
        "MRPC",
        ("#1 String", "#2 String"),
        "Quality",
        _BINARY,
        ("accuracy", "f1"),
        hub_config="mrpc",
        hub_text_columns=("sentence1", "sentence2"),
    ),
    "rte": TaskSpec(
        "rte",
        "RTE",
        ("sentence1", "sentence2"),
        "label",
        _ENTAILMENT,
        ("accuracy",),
        hub_config="rte",
        hub_text_columns=("sentence1", "sentence2"),
    ),
}


@dataclass
class Examples:
    """One split: `texts[i]` is a 1- or 2-tuple of strings, `labels[i]` an id or a float."""

    texts: list[tuple[str, ...]] = field(default_factory=list)
    labels: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None, seed: int = 0) -> "Examples":
        """At most `limit` examples, a seeded random choice kept in file order (for quick runs)."""
        if limit is None or limit >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=limit, replace=False))
        return Examples([self.texts[i] for i in keep], [self.labels[i] for i in keep])


@dataclass
class TaskData:
    train: Examples
    dev: dict[str, Examples]  # by dev split label


def _column_index(spec: TaskSpec, column: str, header: list[str] | None, path: Path) -> int:
    if header is None:
        if not column.isdigit():
            raise DataError(
                f"{spec.name}: column {column!r} must be a 0-based position, as {path} has no "
                "header (header: false)"
            )
        return int(column)
    if column not in header:
        raise DataError(
            f"{path} has no column {column!r} needed by task {spec.name}; its header has "
            f"{', '.join(repr(name) for name in header)}"
        )
    return header.index(column)


def _parse_label(spec: TaskSpec, value: str, where: str):
    if spec.labels is None:
        try:
            number = float(value)
        except ValueError:
            raise DataError(
                f"{where}: label {value!r} of regression task {spec.name} is not a number"
            ) from None
        if not np.isfinite(number):
            raise DataError(f"{where}: label {value!r} of task {spec.name} is not finite")
        return number
    if value not in spec.labels:
        raise DataError(
            f"{where}: label {value!r} is not one of task {spec.name}'s labels "
            f"({', '.join(spec.labels)})"
        )
    return spec.labels.index(value)


def read_tsv(spec: TaskSpec, path: Path) -> Examples:
    """A GLUE-layout TSV file (tab-separated, no quoting, header unless `spec.header` is false)."""
    if not path.is_file():
        raise DataError(
            f"task {spec.name}: {path} does not exist; the data folder must hold "
            f"{spec.folder}/{path.name} in the GLUE TSV layout"
        )
    csv.field_size_limit(sys.maxsize)  # some GLUE sentences are long; rows are lines anyway
    examples = Examples()
    # utf-8-sig: the original MRPC files start with a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None) if spec.header else None
        if spec.header and header is None:
            raise DataError(f"{path} is empty; expected a header line and examples")
        text_indices = [_column_index(spec, c, header, path) for c in spec.text_columns]
        label_index = _column_index(spec, spec.label_column, header, path)
        needed = max(*text_indices, label_index) + 1
        first_row_line = 2 if spec.header else 1
        for line, row in enumerate(rows, start=first_row_line):
            if not row:
                continue
            where = f"{path}:{line}"
            if len(row) < needed:
                raise DataError(
                    f"{where}: {len(row)} columns, task {spec.name} needs at least {needed}; "
                    "fix the line (tabs inside a sentence split it)"
                )
            examples.texts.append(tuple(row[i] for i in text_indices))
            examples.labels.append(_parse_label(spec, row[label_index].strip(), where))
    if not len(examples):
        raise DataError(f"{path} has no examples")
    return examples


def read_local(spec: TaskSpec, root: str | Path) -> TaskData:
    folder = Path(root) / spec.folder
    if not folder.is_dir():
        raise DataError(
            f"task {spec.name}: no folder {folder}; put the task's GLUE TSV files there "
            f"({spec.train_file}, {', '.join(file for _, file in spec.dev_files)})"
        )
    return TaskData(
        train=read_tsv(spec, folder / spec.train_file),
        dev={split: read_tsv(spec, folder / file) for split, file in spec.dev_files},
    )


def _hub_split(spec: TaskSpec, hub_name: str, split: str) -> Examples:
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError(
            "GLUE from the hub needs the datasets package: pip install 'mosaic_pretrain[hf]', "
            "or set data.source=local with GLUE TSV files"
        ) from None
    try:
        rows = load_dataset(hub_name, spec.hub_config, split=split)
    except Exception as error:  # network, missing config or split: one line with the cause
        first = first_line(error)
        raise DataError(
            f"task {spec.name}: cannot load {hub_name} ({spec.hub_config}, {split}) from the "
            f"hub ({first}); without hub access, set data.source=local and data.local to a "
            "folder of GLUE TSV files"
        ) from None
    examples = Examples()
    for number, row in enumerate(rows):
        label = row["label"]
        where = f"{hub_name}/{spec.hub_config} {split} row {number}"
        if spec.labels is not None and not 0 <= label < len(spec.labels):
            raise DataError(f"{where}: label {label} is outside 0..{len(spec.labels) - 1}")
        examples.texts.append(tuple(row[column] for column in spec.hub_text_columns))
        examples.labels.append(float(label) if spec.labels is None else int(label))
    return examples


def read_hub(spec: TaskSpec, hub_name: str = GLUE_HUB_NAME) -> TaskData:
    if spec.hub_config is None:
        raise DataError(f"task {spec.name} is not on the hub; set data.source=local")
    return TaskData(
        train=_hub_split(spec, hub_name, "train"),
        dev={split: _hub_split(spec, hub_name, hub) for split, hub in spec.hub_dev_splits},
    )
