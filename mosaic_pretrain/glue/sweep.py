"""`mosaic-pretrain glue`: plan a sweep's jobs, check everything they need, run them in parallel
processes, and report.

Checks before any job starts: the YAML (schema and cross-key checks), every task's data (folders,
columns, labels), and the starting point (loads under a task head). Then jobs (task x seed) run
one per GPU, or `parallel.workers` at a time on the CPU, each in its own process with its log in
its folder. A job that fails or is killed is reported and the others go on; the tasks that start
from it are not run. Finished jobs keep their `result.json`, so rerunning the sweep runs only
what is missing.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mosaic_pretrain.config import to_yaml
from mosaic_pretrain.config.compare import differing_keys
from mosaic_pretrain.config.folders import lock_rules
from mosaic_pretrain.errors import ConfigError, DataError, Problems
from mosaic_pretrain.folder_lock import FolderLock
from mosaic_pretrain.glue.config import (
    PRETRAINED,
    DeviceChoice,
    GluePrecision,
    SweepConfig,
    hyperparameters,
    task_specs,
)
from mosaic_pretrain.glue.job import (
    JOBS_FOLDER,
    LOG_FILE,
    RESULT_FILE,
    SPEC_FILE,
    JobSpec,
    load_task_data,
)
from mosaic_pretrain.glue.report import summarize, write_report
from mosaic_pretrain.glue.start import (
    load_classifier,
    load_start_tokenizer,
    prepare_starting_point,
    resolve_starting_point,
)

logger = logging.getLogger(__name__)

RESOLVED_SWEEP = "sweep.yaml"
PID_FILE = "job.pid"  # the running (or last) process of a job
POLL_SECONDS = 0.2


class SweepStopped(Exception):
    """The caller asked the sweep to stop (its `should_stop` turned true); the running jobs were
    stopped and nothing was reported. Rerunning the sweep runs the unfinished jobs."""


@dataclass
class Placement:
    """Where jobs run: one slot per concurrent job, each with its GPU (or none) and threads."""

    device: str  # cpu | gpu
    gpus: list[int | None]  # one entry per slot
    threads: int | None


@dataclass
class SweepOutcome:
    folder: Path
    jobs: list[JobSpec]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job name -> why


def place_jobs(config: SweepConfig) -> Placement:
    parallel = config.parallel
    gpu_count = torch.cuda.device_count()
    use_gpu = parallel.device is DeviceChoice.gpu or (
        parallel.device is DeviceChoice.auto and gpu_count > 0
    )
    if use_gpu:
        if gpu_count == 0:
            raise ConfigError("parallel.device=gpu, but no GPU is visible; use cpu or auto")
        gpus = parallel.gpus if parallel.gpus is not None else list(range(gpu_count))
        unknown = [gpu for gpu in gpus if not 0 <= gpu < gpu_count]
        if unknown or not gpus:
            raise ConfigError(f"parallel.gpus={gpus}: choose ids among 0..{gpu_count - 1}")
        workers = parallel.workers or len(gpus)
        return Placement("gpu", [gpus[slot % len(gpus)] for slot in range(workers)], None)
    workers = parallel.workers or 1
    threads = max(1, (os.cpu_count() or 1) // workers)
    return Placement("cpu", [None] * workers, threads)


def _precision(config: SweepConfig, device: str) -> str:
    if config.precision is GluePrecision.auto:
        return "amp_bf16" if device == "gpu" else "fp32"
    return config.precision.value


def plan_jobs(config: SweepConfig, location: str, identity: dict, placement: Placement):
    """Jobs in launch order: tasks other tasks start from first, then the rest as listed."""
    specs = task_specs(config)
    hypers = {task: hyperparameters(config, task) for task in specs}
    sources = {hyper.start_from for hyper in hypers.values() if hyper.start_from != PRETRAINED}
    ordered = sorted(specs, key=lambda task: task not in sources)
    jobs = []
    for task in ordered:
        hyper = hypers[task]
        start_job = None
        if hyper.start_from != PRETRAINED:
            start_job = job_name(hyper.start_from, hypers[hyper.start_from].seeds[0])
        for seed in hyper.seeds:
            jobs.append(
                JobSpec(
                    name=job_name(task, seed),
                    task=specs[task].to_dict(),
                    seed=seed,
                    hyperparameters=asdict(hyper),
                    start=location,
                    start_identity=identity,
                    start_job=start_job,
                    data=data_section(config),
                    tokenizer_name=config.tokenizer_name,
                    max_seq_len=config.max_seq_len,
                    eval_batch_size=config.eval_batch_size,
                    precision=_precision(config, placement.device),
                    device=placement.device,
                    save_encoder=task in sources and seed == hyper.seeds[0],
                    threads=placement.threads,
                )
            )
    return jobs


def job_name(task: str, seed: int) -> str:
    return f"{task}-seed{seed}"


def data_section(config: SweepConfig) -> dict:
    """The data settings a job needs, with the local folder made absolute."""
    local = config.data.local
    return {
        "source": config.data.source.value,
        "local": str(Path(local).resolve()) if local is not None else None,
        "hub_name": config.data.hub_name,
    }


def check_data(config: SweepConfig) -> None:
    """Read every task's files now: a missing folder or column or a bad label stops the sweep
    before any compute is spent (every task's problems at once)."""
    problems = Problems()
    for task in task_specs(config).values():
        loaded = problems.attempt(load_task_data, task, data_section(config))
        if loaded is not None:
            sizes = ", ".join(f"{split} {len(examples)}" for split, examples in loaded.dev.items())
            logger.info("task %s: train %d, %s", task.name, len(loaded.train), sizes)
    if problems.found:
        raise DataError("; ".join(problems.found), problems.found)


def check_sweep(config: SweepConfig) -> list[str]:
    """Every problem `glue` would stop on, without writing into the output folder (a Composer
    checkpoint is exported to a scratch folder to check it loads)."""
    problems = Problems()
    problems.attempt(place_jobs, config)
    problems.attempt(check_data, config)
    start = problems.attempt(resolve_starting_point, config.starting_point, config.recipe)
    if start is not None:
        with tempfile.TemporaryDirectory() as scratch:
            location = problems.attempt(prepare_starting_point, start, Path(scratch))
            if location is not None:
                problems.attempt(load_start_tokenizer, location, config.tokenizer_name)
                problems.attempt(load_classifier, location, 2, regression=False)
    return problems.found


def finished_jobs(folder: Path, jobs: list[JobSpec]) -> set[str]:
    """Jobs whose result is on disk; refuses results made with other settings."""
    finished, conflicts = set(), []
    for job in jobs:
        result_path = folder / JOBS_FOLDER / job.name / RESULT_FILE
        if not result_path.exists():
            continue
        recorded = json.loads(result_path.read_text()).get("settings", {})
        differing = differing_keys(recorded, job.settings())
        if differing:
            conflicts.append(f"{job.name} ({', '.join(differing[:4])})")
        else:
            finished.add(job.name)
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise ConfigError(
            f"{folder} holds results made with other settings: {'; '.join(conflicts[:3])}{more}; "
            "use another output_folder, or delete those job folders to rerun them"
        )
    return finished


def prepare_sweep(config: SweepConfig) -> tuple[Path, list[JobSpec], Placement]:
    """All checks, the starting point export, and the job plan; nothing is trained."""
    folder = config.folder()
    placement = place_jobs(config)
    check_data(config)
    start = resolve_starting_point(config.starting_point, config.recipe)
    folder.mkdir(parents=True, exist_ok=True)
    location = prepare_starting_point(start, folder)
    load_start_tokenizer(location, config.tokenizer_name)
    load_classifier(location, 2, regression=False)  # weights match their config, or we stop here
    jobs = plan_jobs(config, location, start.identity, placement)
    (folder / RESOLVED_SWEEP).write_text(to_yaml(config))
    return folder, jobs, placement


class Scheduler:
    """Runs job processes in slots; a job starts once the job it starts from has finished.
    `should_stop`, polled between launches, stops the running jobs and raises SweepStopped."""

    def __init__(
        self,
        folder: Path,
        placement: Placement,
        outcome: SweepOutcome,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.folder = folder
        self.placement = placement
        self.outcome = outcome
        self.should_stop = should_stop
        self.running: dict[int, tuple[JobSpec, subprocess.Popen, float]] = {}

    def run(self, pending: list[JobSpec], finished: set[str]) -> None:
        try:
            while pending or self.running:
                if self.should_stop is not None and self.should_stop():
                    raise SweepStopped(f"sweep in {self.folder} stopped on request")
                self._launch_ready(pending, finished)
                self._collect(finished)
                time.sleep(POLL_SECONDS)
        except BaseException:
            self._stop_all()
            raise

    def _launch_ready(self, pending: list[JobSpec], finished: set[str]) -> None:
        for job in list(pending):
            if job.start_job is not None and job.start_job in self.outcome.failed:
                pending.remove(job)
                self.outcome.failed[job.name] = f"not run: {job.start_job}, its start, failed"
                logger.error("%s not run: %s failed", job.name, job.start_job)
        free = [slot for slot in range(len(self.placement.gpus)) if slot not in self.running]
        for slot in free:
            ready = [job for job in pending if job.start_job in (None, *finished)]
            if not ready:
                return
            job = ready[0]
            pending.remove(job)
            self.running[slot] = (job, self._start(job, self.placement.gpus[slot]), time.time())

    def _start(self, job: JobSpec, gpu: int | None) -> subprocess.Popen:
        job_folder = self.folder / JOBS_FOLDER / job.name
        job_folder.mkdir(parents=True, exist_ok=True)
        job.write(job_folder / SPEC_FILE)
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        if job.threads:
            env["OMP_NUM_THREADS"] = str(job.threads)
        log = (job_folder / LOG_FILE).open("a")
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} start {job.name}\n")
        log.flush()
        where = f"GPU {gpu}" if gpu is not None else "CPU"
        logger.info("start %s on %s", job.name, where)
        process = subprocess.Popen(
            [sys.executable, "-m", "mosaic_pretrain.glue.job", str(job_folder / SPEC_FILE)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the sweep, which stops its jobs itself
        )
        log.close()
        (job_folder / PID_FILE).write_text(f"{process.pid}\n")
        return process

    def _collect(self, finished: set[str]) -> None:
        for slot, (job, process, started) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            del self.running[slot]
            self.outcome.ran.append(job.name)
            job_folder = self.folder / JOBS_FOLDER / job.name
            if code == 0 and (job_folder / RESULT_FILE).exists():
                finished.add(job.name)
                logger.info("finished %s in %.0f s", job.name, time.time() - started)
                continue
            why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            last = _last_line(job_folder / LOG_FILE)
            self.outcome.failed[job.name] = f"{why}{': ' + last if last else ''}"
            logger.error("%s failed (%s); see %s", job.name, why, job_folder / LOG_FILE)

    def _stop_all(self) -> None:
        for job, process, _ in self.running.values():
            if process.poll() is None:
                logger.warning("stopping %s", job.name)
                os.killpg(process.pid, signal.SIGTERM)
        for _, process, _ in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _last_line(path: Path) -> str:
    if not path.exists():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("===")]
    return lines[-1][:300] if lines else ""


def run_sweep(config: SweepConfig, should_stop: Callable[[], bool] | None = None) -> SweepOutcome:
    folder, jobs, placement = prepare_sweep(config)
    finished = finished_jobs(folder, jobs)
    outcome = SweepOutcome(folder, jobs, skipped=sorted(finished))
    pending = [job for job in jobs if job.name not in finished]
    if finished:
        logger.info("skipping %d finished jobs: %s", len(finished), ", ".join(sorted(finished)))
    slots = len(placement.gpus)
    logger.info("running %d jobs, %d at a time on %s", len(pending), slots, placement.device)
    Scheduler(folder, placement, outcome, should_stop).run(pending, finished)
    return outcome


def glue(
    config: SweepConfig,
    report_only: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[SweepOutcome, dict, str]:
    """Run (or, with `report_only`, only report) a sweep: (outcome, report, printed table).
    When `should_stop()` turns true, the jobs are stopped and SweepStopped is raised. The output
    folder is locked meanwhile: a second sweep into it is refused."""
    with sweep_lock(config):
        return _glue(config, report_only, should_stop)


def sweep_lock(config: SweepConfig) -> FolderLock:
    """The sweep's lock on its output folder (not taken yet)."""
    folder = config.folder()
    what, instead = f"output_folder {folder}", "choose another output_folder or run_name"
    return FolderLock(folder, what, instead, lock_rules(config.folder_lock))


def _glue(
    config: SweepConfig, report_only: bool, should_stop: Callable[[], bool] | None
) -> tuple[SweepOutcome, dict, str]:
    if report_only:
        folder, jobs, _ = prepare_sweep(config)
        outcome = SweepOutcome(folder, jobs, skipped=sorted(finished_jobs(folder, jobs)))
    else:
        outcome = run_sweep(config, should_stop)
    report = summarize(outcome.jobs, outcome.folder, config.score_policy, outcome.failed)
    report["run_name"] = config.run_name
    report["starting_point"] = config.starting_point
    return outcome, report, write_report(report, outcome.folder)
