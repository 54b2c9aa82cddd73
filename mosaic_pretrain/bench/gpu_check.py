"""One prepared run that validates and benchmarks the package on a GPU machine in under 10 minutes.

A GPU is lent to this project rarely, for 15 minutes in all with at most 10 minutes a command,
on a machine that has torch and CUDA but no package registry. This is the one command to spend
them on (`bash scripts/gpu_check.sh --out DIR`, from the repository root):

1. install: the carried wheels (`bash scripts/offline_wheels.sh .whl 3.12`, made where the
   registry is reachable) into a private folder with `pip --no-index --no-deps --target`, so
   the machine's torch is never touched; every part after runs with
   `PYTHONPATH=PRIVATE_DIR:REPO_ROOT` (the carried transformers 4.x shadows the image's 5.x).
2. probe: python, torch, triton, CUDA, driver, GPU, composer, streaming, transformers,
   tokenizers, flash-attn versions, and whether Composer imports with this torch. When it does
   not (its 0.32 pins torch<2.7.1), the check says so and goes on without it: the step
   benchmark times torch's AdamW instead of Composer's DecoupledAdamW (each row names its
   optimizer) and only the end-to-end Trainer run is skipped.
3. pytest_gpu (after the probe, beside data, which is CPU work and starts with the probe):
   `pytest -m gpu` on the test files that hold GPU
   tests (bf16 agreement of every backend with eager, no host-device sync in the step).
4. step: the training step of MosaicBERT-Base (sdpa, flex, flash_attn if importable) and the
   Hugging Face BERT baseline, microbatch 256 at sequence length 128, eager first, then, after
   the end-to-end run, `torch.compile`d (inductor); each configuration in its own subprocess
   with its own timeout, a failure or timeout becoming a row whose status says so.
5. end_to_end: 200 batches of a generated recipe through the `python -m mosaic_pretrain train`
   command line (same data, the fastest eager backend, bf16): Composer's SpeedMonitor real
   tokens/s and its ratio to the bare step of the same configuration. It runs before the
   compiled steps: it is one sure number, while a compile is the part most likely to run long.
6. results: `training_step.{json,md}` (the benchmark's format, `step_results.py`),
   `versions.json`, `pytest_gpu.log`, `gpu_check.log` and `summary.md` in the output folder
   (six files, flat: what a lent machine can send back), the two results also under
   `benchmarks/results/`; the summary is printed last. It exits 0 with whatever it measured (2,
   at once, only when its Python has no torch).

Each part has a budget (its timeout) and a floor (it starts only with that much left before the
overall deadline, 570 s, which keeps 30 s of the 10 minutes for the machine and the transfer);
a part that cannot start is recorded as skipped. `BUDGETS` below is the table.

How the budgets were sized. Measured on the development machine (2 shared CPU cores, torch 2.7
and 2.13 CPU builds, no GPU), per part of the dry run: probe 12-18 s (most of it importing torch,
transformers and Composer), pytest collection of the two GPU test files 19-26 s, data 19-26 s
(the whole corpus: 25 s, of which 15 s writing MDS), an eager step subprocess 11-20 s (start-up
and building the model: the steps themselves are milliseconds), the end-to-end run 28-37 s
(start-up, Trainer, checkpoint), an aot_eager-compiled step 20-35 s; installing the 31 wheels
into a folder 5 s. The H200 machine has 16 cores, so those start-up costs should be lower
there; the budgets keep them at 2-4x what was measured. Inductor was measured too: the one-layer
mini model on this CPU takes about a minute a compile (C++ code generation on 2 busy cores).
MosaicBERT is compiled for dynamic sizes at once (`dynamic=True`, as `train` does), so it
compiles once in the warm-up; before that it compiled twice (static shapes, then dynamic ones
once the token count changed), counted by dynamo on the real batches. The padded baseline
compiles once.
Guesses, not measured: the GPU step (from its FLOPs: ~40% of the 32,768 positions are real
tokens, ~8 TFLOP a MosaicBERT-Base step, tens of ms on an H200, so 25 steps are seconds) and
inductor on Base with Triton on 16 cores (40-70 s a compile, ~60 s for the baseline; flex, even
"eager", compiles its attention kernels on CUDA: ~30 s more).
Expected: install 10 + probe 15 + max(data, pytest) 30 + eager sdpa 20, flex 50, baseline 20 +
end-to-end 55 + compiled sdpa 80, baseline 70, flex 110 = 460 s of the 570; if the guesses are
short, the deadline takes the last compiled configuration (flex) rather than the rest.

Steps: 5 of warm-up (the compile, a recompile if any, and the first-call costs) and 20 timed,
each timed by CUDA events around one step (each row keeps the fastest step beside the median,
so the first run shows how stable 20 are), and 20 steps cover each of the 16 distinct batches
at least once, so the mean work per step is that of the whole pool. No largest-microbatch
search: each size would be another subprocess and, compiled, another compile.

`--dry-run` runs the same sequence on the CPU at tiny size (mini preset, one layer, microbatch
4, sequence length 32, 1 + 2 steps, 4 end-to-end batches, compiled with dynamo's `eager`
backend: the tracing, graph breaks and guards of `torch.compile` without code generation;
inductor would add about a minute a compile here and aot_eager ~13 s, and the tests of the step
already cover aot_eager), with no wheels (the current environment). It takes 2.5-4 minutes on the
development machine: ~165 s of CPU, most of it 10 Python start-ups that import torch,
transformers (through the model package) and Composer at 7-10 s each, on 2 shared cores.
`tests/test_gpu_check.py` runs it so the script cannot rot.
"""

import argparse
import datetime
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mosaic_pretrain.bench.gpu_check_parts import (
    DATA_FILE,
    END_TO_END_FILE,
    NOT_INSTALLED,
    PLAN_FILE,
    PROBE_FILE,
)
from mosaic_pretrain.bench.gpu_check_runner import PartOutcome, Runner
from mosaic_pretrain.bench.step_results import (
    StepResult,
    add_bare_step_ratio,
    empty_result,
    fastest_backend,
    write_results,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTS_MODULE = "mosaic_pretrain.bench.gpu_check_parts"
DEADLINE_S = 570.0  # of the 600 s a command may run
RESERVE_S = 10.0  # kept back at the end for writing the results
OUTPUT_FILES = (
    "training_step.json",
    "training_step.md",
    "versions.json",
    "pytest_gpu.log",
    "gpu_check.log",
    "summary.md",
)


@dataclass(frozen=True)
class Budget:
    budget_s: float  # the part's timeout
    floor_s: float  # started only with at least this much left before the deadline


# The GPU run's budgets (sizing in the module docstring). step_* are per configuration.
BUDGETS = {
    "install": Budget(60, 20),
    "probe": Budget(60, 20),
    "data": Budget(120, 30),
    "pytest_gpu": Budget(120, 30),
    "step_eager": Budget(90, 25),  # flex compiles its attention kernel even here, on CUDA
    "end_to_end": Budget(150, 60),
    "step_compiled": Budget(170, 90),
}
# The dry run's: the same parts at tiny size on a CPU, 10-30 s each on 2 idle cores, several
# times that when the cores are shared; the dry run tests the sequence, not speed, so these
# budgets only have to stop a hang.
DRY_BUDGETS = {
    "install": Budget(0, 0),
    "probe": Budget(240, 10),
    "data": Budget(240, 10),
    "pytest_gpu": Budget(240, 10),
    "step_eager": Budget(180, 10),
    "end_to_end": Budget(240, 10),
    "step_compiled": Budget(180, 10),
}


@dataclass(frozen=True)
class CheckPlan:
    """What the check measures; `gpu_check_parts` reads it from the scratch folder."""

    device: str
    preset: str
    model_overrides: dict
    seq_len: int
    microbatch: int
    warmup: int
    steps: int
    batches: int  # distinct batches cycled through
    rows: str  # see training_step.write_benchmark_corpus
    max_documents: int | None
    backends: tuple[str, ...]
    compile_backend: str
    end_to_end_batches: int
    end_to_end_workers: int
    deadline_s: float
    budgets: dict


GPU_PLAN = CheckPlan(
    device="cuda",
    preset="base",
    model_overrides={},
    seq_len=128,
    microbatch=256,
    warmup=5,
    steps=20,
    batches=16,
    rows="paragraphs",
    max_documents=None,
    backends=("sdpa", "flex", "flash_attn"),
    compile_backend="inductor",
    end_to_end_batches=200,
    end_to_end_workers=4,  # collating 256 rows every ~50 ms: more than one worker's share
    deadline_s=DEADLINE_S,
    budgets=BUDGETS,
)
DRY_PLAN = CheckPlan(
    device="cpu",
    preset="mini",
    model_overrides={"num_hidden_layers": 1},
    seq_len=32,
    microbatch=4,
    warmup=1,
    steps=2,
    batches=3,
    rows="paragraphs",
    max_documents=3000,
    backends=("sdpa", "flex", "flash_attn"),
    compile_backend="eager",  # dynamo's tracing, graph breaks and guards, no code generated
    end_to_end_batches=4,
    end_to_end_workers=0,
    deadline_s=840.0,
    budgets=DRY_BUDGETS,
)


def configurations(plan: CheckPlan) -> list[tuple[str, str, bool]]:
    """(model, backend, compiled) in the order of the results table."""
    mosaic = [("mosaic_bert", b, c) for b in plan.backends for c in (False, True)]
    return [*mosaic, ("hf_bert", "sdpa", False), ("hf_bert", "sdpa", True)]


def compiled_order(plan: CheckPlan) -> list[tuple[str, str, bool]]:
    """The compiled configurations in the order they run: the headline pair first (MosaicBERT's
    first backend and the baseline), then the other backends, so that the deadline, if it bites,
    takes a backend comparison rather than the comparison with BERT."""
    first, *others = plan.backends
    return [
        ("mosaic_bert", first, True),
        ("hf_bert", "sdpa", True),
        *(("mosaic_bert", backend, True) for backend in others),
    ]


class GpuCheck:
    """The sequence of parts, the facts they hand on to each other, and the record."""

    def __init__(self, plan: CheckPlan, out: Path, scratch: Path, site: Path | None):
        self.plan = plan
        self.out = out
        self.scratch = scratch
        self.site = site
        python_path = [str(site)] if site else []
        python_path += [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(python_path),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",  # nothing outside the machine can be reached
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.runner = Runner(
            out / "gpu_check.log", scratch, env, plan.deadline_s, RESERVE_S, REPO_ROOT
        )
        self.probe: dict = {}
        self.data: dict = {}
        self.results: dict[tuple[str, str, bool], StepResult] = {}
        self.end_to_end: dict = {}
        self.pytest_summary = "not run"

    def worker(self, part: str, *options: str) -> list[str]:
        return [sys.executable, "-m", PARTS_MODULE, part, "--scratch", str(self.scratch), *options]

    def budget(self, part: str) -> tuple[float, float]:
        budget = self.plan.budgets[part]
        return budget.budget_s, budget.floor_s

    # --- the parts, in order ----------------------------------------------------------------

    def install(self, wheels: Path) -> None:
        if self.site is None:
            self.runner.skip("install", "--dry-run uses this environment")
            return
        found = sorted(wheels.glob("*.whl"))
        if not found:
            self.runner.skip(
                "install",
                f"no wheels in {wheels} (make them with `bash scripts/offline_wheels.sh "
                f"{wheels} 3.12`); going on with this environment",
            )
            return
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        command += ["--no-compile", "--upgrade", "--target", str(self.site), *map(str, found)]
        self.runner.run("install", command, *self.budget("install"))

    def probe_data_and_gpu_tests(self) -> None:
        """The pool is CPU work, beside the probe and then beside the GPU tests; the probe's
        matmul ceiling and the GPU tests do not overlap, so the ceiling is the GPU's alone. Each
        part is a Python start-up importing torch and transformers, seconds on its own."""
        data = self.runner.start("data", self.worker("data"), *self.budget("data"))
        probed = self.runner.run("probe", self.worker("probe"), *self.budget("probe"))
        if probed.ok:
            self.probe = json.loads((self.scratch / PROBE_FILE).read_text())
        (self.out / "versions.json").write_text(
            json.dumps(self.probe or {"probe": probed.status}, indent=2) + "\n"
        )
        for line in version_lines(self.probe):
            self.runner.say(line)
        tests = self.runner.start(
            "pytest_gpu", pytest_command(), *self.budget("pytest_gpu"), self.out / "pytest_gpu.log"
        )
        tested = self.runner.finish(tests)
        self.pytest_summary = pytest_summary(self.out / "pytest_gpu.log", tested)
        self.runner.say(f"pytest_gpu: {self.pytest_summary}")
        if self.runner.finish(data).ok:
            self.data = json.loads((self.scratch / DATA_FILE).read_text())

    @property
    def device_error(self) -> str | None:
        """Why the device cannot run a kernel, when the probe found it so."""
        error = self.probe.get("device_error")
        return f"the {self.plan.device} device does not work ({error})" if error else None

    @property
    def optimizer(self) -> str:
        return "decoupled_adamw" if self.composer_error is None else "adamw"

    @property
    def composer_error(self) -> str | None:
        if not self.probe:
            return "the probe did not finish"
        return self.probe["composer_error"] or self.probe["trainer_error"]

    def step(self, model: str, backend: str, compiled: bool) -> None:
        kind = "compiled" if compiled else "eager"
        name = f"step-{model}-{backend}-{kind}"
        key = (model, backend, compiled)
        row = dict(model=model, backend=backend, compiled=compiled, microbatch=self.plan.microbatch)
        row["layout"] = "host" if model == "mosaic_bert" else "n/a"
        row["optimizer"] = self.optimizer
        flash = self.probe.get("versions", {}).get("flash_attn")  # None: the probe failed
        if backend == "flash_attn" and flash and (flash == NOT_INSTALLED or "failed" in flash):
            self.results[key] = empty_result(**row, status=f"skipped: flash-attn {flash}")
            return
        why = self.device_error or (None if self.data else "no batches: the data part failed")
        if why is not None:
            self.results[key] = empty_result(**row, status=self.runner.skip(name, why).status)
            return
        options = ["--name", name, "--model", model, "--backend", backend]
        options += ["--optimizer", self.optimizer] + (["--compiled"] if compiled else [])
        outcome = self.runner.run(name, self.worker("step", *options), *self.budget(f"step_{kind}"))
        if outcome.ok:
            self.results[key] = StepResult(
                **json.loads((self.scratch / f"{name}.json").read_text())
            )
        else:
            self.results[key] = empty_result(**row, status=outcome.status)

    def run_end_to_end(self) -> None:
        backend = fastest_backend(list(self.results.values()))
        if self.composer_error is not None:
            why = f"Composer's Trainer cannot run here ({self.composer_error})"
            self.end_to_end = {"status": self.runner.skip("end_to_end", why).status}
            return
        why = self.device_error or (None if self.data else "no data: the data part failed")
        if why is not None:
            self.end_to_end = {"status": self.runner.skip("end_to_end", why).status}
            return
        command = self.worker("end_to_end", "--backend", backend)
        outcome = self.runner.run("end_to_end", command, *self.budget("end_to_end"))
        if outcome.ok:
            measured = json.loads((self.scratch / END_TO_END_FILE).read_text())
            self.end_to_end = add_bare_step_ratio(measured, list(self.results.values()))
            self.end_to_end["status"] = "ok"
        else:
            self.end_to_end = {"backend": backend, "status": outcome.status}

    def run(self, wheels: Path) -> dict:
        (self.scratch / PLAN_FILE).write_text(json.dumps(asdict(self.plan), indent=2))
        self.install(wheels)
        self.probe_data_and_gpu_tests()
        everything = configurations(self.plan)
        for model, backend, compiled in everything:
            if not compiled:
                self.step(model, backend, compiled)
        self.run_end_to_end()
        for model, backend, compiled in compiled_order(self.plan):
            self.step(model, backend, compiled)
        return self.record(everything)

    def record(self, everything: list[tuple[str, str, bool]]) -> dict:
        """The benchmark's record (`training_step.run_benchmark`'s keys) plus the check's own."""
        probe = self.probe
        return {
            "device": probe.get("device", "unknown (the probe did not finish)"),
            "torch": probe.get("torch"),
            "cuda": probe.get("cuda"),
            "date": probe.get("date", datetime.date.today().isoformat()),
            "triton": probe.get("triton"),
            "driver": probe.get("driver"),
            "precision": "amp_bf16" if self.plan.device == "cuda" else "fp32",
            "preset": self.plan.preset,
            "seq_len": self.plan.seq_len,
            "data": self.data.get("data", "n/a (the data part did not finish)"),
            "fill": self.data.get("fill"),
            "masked_fraction_of_real_tokens": self.data.get("masked_fraction_of_real_tokens"),
            "peak_bf16_flops": probe.get("peak_bf16_flops"),
            "matmul_ceiling_flops": probe.get("matmul_ceiling_flops"),
            "largest_microbatch": {},  # not searched: no time for it in 10 minutes
            "plan": asdict(self.plan),
            "results": [asdict(self.results[key]) for key in everything if key in self.results],
            "end_to_end": self.end_to_end,
            "gpu_check": {
                "dry_run": self.plan.device != "cuda",
                "optimizer": self.optimizer,
                "composer": self.composer_error or "ok",
                "pytest_gpu": self.pytest_summary,
                "parts": self.runner.outcome_records(),
                "seconds": round(self.runner.elapsed(), 1),
                "deadline_s": self.plan.deadline_s,
            },
        }


def pytest_command() -> list[str]:
    """`pytest -m gpu` on the test files that hold GPU tests. A file that cannot be collected
    (one needing Composer, when Composer refuses this torch) must not stop the others."""
    files = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in path.read_text()
    )
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    return [*command, "--continue-on-collection-errors", *files]


def pytest_summary(log: Path, outcome: PartOutcome) -> str:
    """pytest's closing counts ("3 passed, 2 skipped, 40 deselected"), or why there are none."""
    if not log.exists() or outcome.status.startswith(("skipped", "timed out")):
        return outcome.status
    counts = re.findall(r"^=*\s*(\d+ \w+.*?) in [\d.]+s", log.read_text(), re.M)
    return counts[-1] if counts else outcome.status


def version_lines(probe: dict) -> list[str]:
    if not probe:
        return ["versions: unknown (the probe did not finish)"]
    lines = [
        f"python {probe['python']} ({probe['executable']}), torch {probe['torch']}, "
        f"triton {probe.get('triton')}, CUDA {probe['cuda']}, driver {probe.get('driver')}, "
        f"GPU {probe.get('gpu')}",
        ", ".join(f"{name} {version}" for name, version in probe["versions"].items()),
    ]
    if probe["device_error"]:
        lines.append(f"the device does not work: {probe['device_error']}")
    if error := probe["composer_error"] or probe["trainer_error"]:
        lines.append(
            f"composer does not import here ({error}): going on without it (torch's AdamW in "
            "the step, no end-to-end Trainer run)"
        )
    return lines


def summary_markdown(record: dict, out: Path) -> str:
    check = record["gpu_check"]
    lines = [
        f"# GPU check{' (dry run)' if check['dry_run'] else ''}: {record['device']}, "
        f"torch {record['torch']}, CUDA {record['cuda']}, {record['date']}",
        "",
        f"composer: {check['composer']}; optimizer timed: {check['optimizer']}; "
        f"pytest -m gpu: {check['pytest_gpu']}",
        "",
        "| part | status | s | budget s |",
        "|---|---|---:|---:|",
        *(
            f"| {p['part']} | {p['status']} | {p['seconds']:.0f} | {p['budget_s']:.0f} |"
            for p in check["parts"]
        ),
        "",
        "| model | backend | compiled | step ms | real tokens/s | MFU spec | MFU ceiling "
        "| peak GiB | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['compiled']} | {_cell(row['step_ms'])} | "
            f"{_cell(row['tokens_per_s'], ',.0f')} | {_cell(row['mfu'], '.1%')} | "
            f"{_cell(row['mfu_vs_matmul_ceiling'], '.1%')} | {_cell(row['peak_mem_gib'], '.2f')} "
            f"| {row['status']} |"
        )
    e2e = record["end_to_end"]
    if e2e.get("tokens_per_s"):
        ratio = e2e.get("ratio_to_bare_step")
        lines += [
            "",
            f"end to end ({e2e['backend']}, {e2e['batches']} batches): "
            f"{e2e['tokens_per_s']:,.0f} real tokens/s"
            + (f", {ratio:.0%} of the bare step" if ratio else ""),
        ]
    else:
        lines += ["", f"end to end: {e2e.get('status', 'not run')}"]
    lines += [
        "",
        f"{check['seconds']:.0f} s of a {check['deadline_s']:.0f} s deadline; files in {out}: "
        + ", ".join(OUTPUT_FILES),
    ]
    return "\n".join(lines) + "\n"


def _cell(value, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate and benchmark the package on a GPU machine in under 10 minutes."
    )
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="output folder")
    parser.add_argument("--wheels", type=Path, default=Path(".whl"), help="carried wheels")
    parser.add_argument(
        "--site", type=Path, default=Path("/tmp/mosaic_pretrain_site"), help="wheels go here"
    )
    parser.add_argument("--scratch", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument(
        "--results",
        type=Path,
        help="also write PATH.{json,md} (default: benchmarks/results/training_step; none with "
        "--dry-run)",
    )
    parser.add_argument("--deadline-s", type=float, help="overall deadline in seconds")
    parser.add_argument(
        "--dry-run", action="store_true", help="the same sequence, tiny, on the CPU, no wheels"
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None:  # nothing can be measured: say so, plainly
        print(
            f"gpu_check: error: {sys.executable} has no torch; run it with a Python that has torch "
            "(PYTHON=/path/to/python bash scripts/gpu_check.sh ...)",
            file=sys.stderr,
        )
        return 2
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if args.deadline_s is not None:
        plan = replace(plan, deadline_s=args.deadline_s)
    results = args.results
    if results is None and not args.dry_run:
        results = REPO_ROOT / "benchmarks" / "results" / "training_step"
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").write_text("")
    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="gpu_check_"))).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        check = GpuCheck(plan, out, scratch, None if args.dry_run else args.site.resolve())
        record = check.run(args.wheels.resolve())
        write_results(record, out / "training_step")
        if results is not None:
            write_results(record, results)
        summary = summary_markdown(record, out)
        (out / "summary.md").write_text(summary)
        with (out / "gpu_check.log").open("a") as log:
            log.write(summary)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(summary, end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
