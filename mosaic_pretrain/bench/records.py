"""Writing a benchmark's record: JSON to read back and compare, markdown to read, side by side.
Standard library only, so that the GPU check's parent process can write without torch."""

import json
from pathlib import Path


def write_record(record: dict, out: Path, markdown: str) -> tuple[Path, Path]:
    """`out.json` and `out.md` (parents made); returns their paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    markdown_path.write_text(markdown)
    return json_path, markdown_path
