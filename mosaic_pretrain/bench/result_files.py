"""A benchmark's record as the pair of files `benchmarks/results/` keeps: JSON and markdown."""

import json
from pathlib import Path


def write_result_files(out: Path, record: dict, markdown: str) -> None:
    """OUT.json (the record) and OUT.md (its table), the folder made if needed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
