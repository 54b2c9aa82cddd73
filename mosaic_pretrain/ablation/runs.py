"""`mosaic-pretrain ablate RECIPE`: the recipe once per value of its `ablation.key` (and seed).

Every run is the same recipe with one key changed, so the data order, masking, schedule and
evaluation steps are identical and the eval losses are comparable step for step. All runs'
recipes are built and validated before the first trains. A run leaves `outcome.json` in its
folder when it ends (finished or failed); reruns skip finished runs and continue unfinished ones
from their latest checkpoint (autoresume), so an interrupted ablation loses at most one
save interval.
"""

import gc
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import PretrainConfig, load_config
from mosaic_pretrain.config.compare import flatten
from mosaic_pretrain.config.folders import ablation_output_folder
from mosaic_pretrain.errors import ConfigError, MosaicPretrainError
from mosaic_pretrain.train.resume import recipe_record

logger = logging.getLogger(__name__)

OUTCOME_FILE = "outcome.json"
# The runner sets these per run; an ablation over them would compare nothing.
MANAGED_KEYS = ("ablation", "run_name", "save_folder", "export_folder", "autoresume", "load_path")


@dataclass
class AblationRun:
    value: str
    seed: int
    name: str  # also the folder name under the ablation's output folder
    folder: Path
    config: PretrainConfig

    @property
    def outcome_path(self) -> Path:
        return self.folder / OUTCOME_FILE

    def outcome(self) -> dict | None:
        if not self.outcome_path.exists():
            return None
        return json.loads(self.outcome_path.read_text())


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("_") or "empty"


def _check_section(config: PretrainConfig) -> None:
    section = config.ablation
    problems = []
    keys = flatten(recipe_record(config))
    if section.key not in keys:
        problems.append(
            f"ablation.key={section.key!r} is not a key of this recipe (write a dotted key, "
            "e.g. model.model_config.ffn_activation)"
        )
    elif section.key.split(".")[0] in MANAGED_KEYS or section.key == "seed":
        problems.append(
            f"ablation.key={section.key!r} is set by the ablation itself; sweep seeds with "
            "ablation.seeds"
        )
    if not section.values:
        problems.append("ablation.values is empty: list the values to compare")
    slugs = [_slug(value) for value in section.values]
    if len(set(slugs)) != len(slugs):
        problems.append(f"ablation.values {section.values} repeat a value (or its folder name)")
    if len(set(section.seeds)) != len(section.seeds):
        problems.append(f"ablation.seeds {section.seeds} repeat a seed")
    if problems:
        raise ConfigError("; ".join(problems), problems)


def plan_runs(recipe: Path, overrides: list[str]) -> tuple[PretrainConfig, list[AblationRun]]:
    """The base recipe and one validated recipe per (value, seed); every bad value reported."""
    base = load_config(recipe, overrides)
    if base.ablation is None:
        raise ConfigError(
            f"{recipe} has no `ablation` section: add ablation.key and ablation.values "
            "(see configs/pretrain/ablate-activations.yaml)"
        )
    _check_section(base)
    section = base.ablation
    seeds = section.seeds or [base.seed]
    folder = ablation_output_folder(base)
    problems: list[str] = []
    runs = []
    for value in section.values:
        for seed in seeds:
            name = _slug(value) + (f"-seed{seed}" if len(seeds) > 1 else "")
            run_folder = folder / name
            per_run = [
                f"{section.key}={value}",
                f"seed={seed}",
                "ablation=null",
                f"run_name={base.run_name}-{name}",
                f"save_folder={run_folder}/checkpoints",
                "export_folder=null",
                "autoresume=true",
                "load_path=null",
            ]
            try:
                config = load_config(recipe, [*overrides, *per_run])
            except MosaicPretrainError as error:
                problems += [f"ablation value {value!r}: {problem}" for problem in error.problems]
                break  # the other seeds would say the same
            runs.append(AblationRun(value, seed, name, run_folder, config))
    if problems:
        raise ConfigError("; ".join(problems), problems)
    return base, runs


def _parameter_count(trainer) -> int:
    return sum(parameter.numel() for parameter in trainer.state.model.parameters())


def run_one(run: AblationRun) -> dict:
    """Train one run (continuing it if a checkpoint exists) and write its outcome."""
    run.folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcome = {"value": run.value, "seed": run.seed, "name": run.name}
    try:
        trainer = train(run.config)
    except MosaicPretrainError as error:
        outcome.update(status="failed", error=str(error))
        logger.error("ablation run %s failed: %s", run.name, error)
    else:
        outcome.update(status="finished", parameters=_parameter_count(trainer))
        trainer.close()
        del trainer
        gc.collect()
    outcome["wall_seconds"] = round(time.monotonic() - started, 1)
    temporary = run.outcome_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(outcome, indent=2) + "\n")
    temporary.replace(run.outcome_path)
    return outcome
