"""One finetuning job (a task and a seed), run in its own process by the sweep.

`python -m mosaic_pretrain.glue.job JOB_FOLDER/spec.json` finetunes with Composer's Trainer,
evaluates on every dev split at `eval_interval` and at the end, and writes `result.json` in the job
folder only when everything succeeded, so a job folder with a result is a finished job. A job that
other tasks start from also writes its finetuned encoder (`encoder/`) before its result.
"""

import json
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from composer import Trainer
from composer.core import Callback, Evaluator, State
from composer.loggers import Logger
from composer.models import ComposerModel
from composer.optim import DecoupledAdamW, LinearWithWarmupScheduler
from composer.utils import dist
from torch.utils.data import DataLoader

from mosaic_pretrain.callbacks.metrics_file import MetricsFile
from mosaic_pretrain.data.glue_tasks import Examples, TaskData, TaskSpec, read_hub, read_local
from mosaic_pretrain.errors import MosaicPretrainError
from mosaic_pretrain.glue.metrics import PredictionMetric
from mosaic_pretrain.glue.start import load_classifier, load_start_tokenizer, save_encoder

logger = logging.getLogger(__name__)

JOBS_FOLDER = "jobs"  # in the sweep folder, one folder per job
SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
LOG_FILE = "job.log"
ENCODER_FOLDER = "encoder"
# MosaicBERT's finetuning optimizer and schedule, shared by every task.
BETAS = (0.9, 0.98)
EPS = 1.0e-6
WARMUP = "0.06dur"
SUBSET_SEED = 0  # the same quick-run subset for every seed, so seeds differ only in training


@dataclass
class JobSpec:
    """Everything a job needs, written to its folder as JSON. Two jobs with equal `settings()`
    give the same result, so a sweep rerun can skip one that already finished."""

    name: str
    task: dict  # TaskSpec.to_dict()
    seed: int
    hyperparameters: dict  # TaskHyperparameters fields
    start: str  # from_pretrained location, or the job whose encoder to start from
    start_identity: dict  # what the weights at `start` are (changes when they change)
    start_job: str | None
    data: dict  # source, local, hub_name
    tokenizer_name: str | None
    max_seq_len: int
    eval_batch_size: int
    precision: str
    device: str  # cpu | gpu
    save_encoder: bool = False
    threads: int | None = None  # CPU threads for this process
    extra: dict = field(default_factory=dict)

    @property
    def task_spec(self) -> TaskSpec:
        return TaskSpec.from_dict(self.task)

    def settings(self) -> dict:
        """The fields that decide the result (not where or how fast it is computed)."""
        decisive = asdict(self)
        for key in ("device", "threads", "save_encoder", "eval_batch_size"):
            decisive.pop(key)
        decisive["hyperparameters"].pop("seeds")  # adding seeds leaves finished seeds valid
        return json.loads(json.dumps(decisive))  # as read back from result.json

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> "JobSpec":
        return cls(**json.loads(path.read_text()))


def load_task_data(task: TaskSpec, data: dict) -> TaskData:
    if data["source"] == "hub" and task.hub_config is not None:
        return read_hub(task, data["hub_name"])
    folder = Path(task.folder)
    root = "/" if folder.is_absolute() else data["local"]
    return read_local(task, root)


class TokenizedExamples(torch.utils.data.Dataset):
    """Examples tokenized once, up front; batches are padded to their own longest row."""

    def __init__(self, examples: Examples, tokenizer, max_seq_len: int, regression: bool):
        columns = list(zip(*examples.texts, strict=True))
        encoded = tokenizer(
            list(columns[0]),
            list(columns[1]) if len(columns) > 1 else None,
            truncation=True,
            max_length=max_seq_len,
        )
        self.input_ids = encoded["input_ids"]
        self.token_type_ids = encoded.get("token_type_ids")
        self.labels = torch.tensor(
            examples.labels, dtype=torch.float32 if regression else torch.long
        )

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        types = self.token_type_ids[index] if self.token_type_ids is not None else None
        return {"input_ids": self.input_ids[index], "token_type_ids": types, "row": index}


class PadToLongest:
    def __init__(self, pad_token_id: int, labels: torch.Tensor):
        self.pad_token_id = pad_token_id
        self.labels = labels

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros_like(input_ids)
        attention_mask = torch.zeros_like(input_ids)
        for i, row in enumerate(rows):
            length = len(row["input_ids"])
            input_ids[i, :length] = torch.tensor(row["input_ids"])
            attention_mask[i, :length] = 1
            if row["token_type_ids"] is not None:
                token_type_ids[i, :length] = torch.tensor(row["token_type_ids"])
        labels = self.labels[torch.tensor([row["row"] for row in rows])]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "labels": labels,
        }


def _loader(dataset: TokenizedExamples, pad_id: int, batch_size: int, shuffle: bool, seed: int):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=dist.get_sampler(dataset, shuffle=shuffle, drop_last=False, seed=seed),
        collate_fn=PadToLongest(pad_id, dataset.labels),
        drop_last=False,
    )


class ClassifierComposerModel(ComposerModel):
    """A transformers sequence classifier (MosaicBERT or BERT) with the task's dev metrics."""

    def __init__(self, model: torch.nn.Module, task: TaskSpec):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict):
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=batch["labels"],
        )

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: dict, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        if is_train:
            return {}
        return {name: PredictionMetric(name, self.task.is_regression) for name in self.task.metrics}

    def update_metric(self, batch: dict, outputs, metric: PredictionMetric) -> None:
        metric.update(outputs.logits, batch["labels"])


class EvalRecorder(Callback):
    """Keeps every evaluation of every dev split, with the training time it happened at."""

    def __init__(self):
        self.evaluations: list[dict] = []

    def eval_end(self, state: State, logger: Logger) -> None:
        split = state.dataloader_label
        values = {
            name: float(metric.compute()) for name, metric in state.eval_metrics[split].items()
        }
        batch = int(state.timestamp.batch)
        self.evaluations.append(
            {"batch": batch, "epoch": int(state.timestamp.epoch), "split": split, "metrics": values}
        )
        shown = ", ".join(f"{name} {100 * value:.2f}" for name, value in values.items())
        logging.getLogger(__name__).info("eval %s at batch %d: %s", split, batch, shown)


def _encoder_location(spec: JobSpec, jobs_folder: Path) -> str:
    if spec.start_job is None:
        return spec.start
    return str(jobs_folder / spec.start_job / ENCODER_FOLDER)


def run_job(spec: JobSpec, folder: Path) -> dict:
    """Finetune and evaluate; returns (and writes) the job's result."""
    started = time.time()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    task = spec.task_spec
    hyper = spec.hyperparameters
    data = load_task_data(task, spec.data)
    train_examples = data.train.subset(hyper["max_train_examples"], SUBSET_SEED)
    dev_examples = {
        split: examples.subset(hyper["max_eval_examples"], SUBSET_SEED)
        for split, examples in data.dev.items()
    }
    location = _encoder_location(spec, folder.parent)
    tokenizer = load_start_tokenizer(location, spec.tokenizer_name)
    pad_id = tokenizer.pad_token_id
    regression = task.is_regression

    def tokenized(examples):
        return TokenizedExamples(examples, tokenizer, spec.max_seq_len, regression)

    torch.manual_seed(spec.seed)  # the new head's initial weights follow the job's seed
    classifier = load_classifier(location, task.num_labels, regression)
    model = ClassifierComposerModel(classifier, task)
    train_loader = _loader(tokenized(train_examples), pad_id, hyper["batch_size"], True, spec.seed)
    evaluators = [
        Evaluator(
            label=split,
            dataloader=_loader(tokenized(examples), pad_id, spec.eval_batch_size, False, 0),
            metric_names=list(task.metrics),
        )
        for split, examples in dev_examples.items()
    ]
    recorder = EvalRecorder()
    trainer = Trainer(
        run_name=spec.name,
        model=model,
        train_dataloader=train_loader,
        eval_dataloader=evaluators,
        eval_interval=hyper["eval_interval"],
        max_duration=f"{hyper['epochs']}ep",
        optimizers=DecoupledAdamW(
            model.parameters(),
            lr=hyper["lr"],
            betas=BETAS,
            eps=EPS,
            weight_decay=hyper["weight_decay"],
        ),
        schedulers=LinearWithWarmupScheduler(t_warmup=WARMUP, alpha_f=0.0),
        precision=spec.precision,
        device=spec.device,
        seed=spec.seed,
        callbacks=[recorder],
        loggers=[MetricsFile(folder)],
        progress_bar=False,
        log_to_console=False,
    )
    trainer.fit()
    trainer.close()
    if spec.save_encoder:
        encoder = folder / ENCODER_FOLDER
        if encoder.exists():  # from an attempt killed before its result was written
            shutil.rmtree(encoder)
        save_encoder(classifier.eval(), tokenizer, encoder)
    result = {
        "name": spec.name,
        "task": task.name,
        "seed": spec.seed,
        "settings": spec.settings(),
        "evaluations": recorder.evaluations,
        "train_examples": len(train_examples),
        "dev_examples": {split: len(examples) for split, examples in dev_examples.items()},
        "batches": int(trainer.state.timestamp.batch),
        "wall_time_s": round(time.time() - started, 2),
        "device": _device_name(spec.device),
        "precision": spec.precision,
    }
    partial = folder / f".{RESULT_FILE}.partial"
    partial.write_text(json.dumps(result, indent=2))
    partial.rename(folder / RESULT_FILE)
    return result


def _device_name(device: str) -> str:
    if device == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Composer's note that a small last eval batch is not split into microbatches: expected here.
    warnings.filterwarnings("ignore", message="Cannot split tensor of length")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec_path = Path(argv[0])
    spec = JobSpec.read(spec_path)
    logger.info("job %s (pid %d)", spec.name, os.getpid())
    try:
        result = run_job(spec, spec_path.parent)
    except MosaicPretrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info("finished %s in %.1f s", spec.name, result["wall_time_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
