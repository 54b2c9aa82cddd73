"""`mosaic-pretrain ablate`: train every run of the sweep not finished yet, then compare them."""

import logging
from pathlib import Path

from mosaic_pretrain.ablation.report import write_report
from mosaic_pretrain.ablation.runs import plan_runs, run_one
from mosaic_pretrain.config.folders import ablation_output_lock

logger = logging.getLogger(__name__)


def run_ablation(recipe: Path, overrides: list[str], report_only: bool = False):
    """Run what is not finished yet, then write the comparison (see `ablation.report`)."""
    base, runs = plan_runs(recipe, overrides)
    with ablation_output_lock(base):  # one ablation per output folder; each run locks its own too
        if not report_only:
            for run in runs:
                previous = run.outcome()
                if previous is not None and previous["status"] == "finished":
                    logger.info("ablation run %s: finished before, skipped", run.name)
                    continue
                logger.info("ablation run %s: %s=%s, seed %d", run.name, base.ablation.key,
                            run.value, run.seed)  # fmt: skip
                run_one(run)
        return write_report(base, runs, recipe)
