"""The README's table of valid values, written from the `ranged` rules of the recipe schema, the
GLUE sweep schema and `convert`'s options, so the docs and the checks cannot drift apart."""

from mosaic_pretrain.config.schema import PretrainConfig
from mosaic_pretrain.data.convert import WORKERS, ConvertOptions, option_name
from mosaic_pretrain.glue.config import SweepConfig
from mosaic_pretrain.ranges import PathText, range_table

START = "<!-- valid-values:start (scripts/valid_values_table.py writes this table) -->"
END = "<!-- valid-values:end -->"


def valid_values_markdown() -> str:
    """One markdown table per schema: each ranged key and its valid values (paths, which all
    follow one rule, are left out of the tables and stated once above them)."""
    sections = [
        ("Pretraining recipe", range_table(PretrainConfig)),
        ("GLUE sweep", range_table(SweepConfig)),
        (
            "`mosaic-pretrain convert`",
            [(option_name(key), text) for key, text in range_table(ConvertOptions)]
            + [("--workers", WORKERS.describe())],
        ),
    ]
    path_rule = PathText().describe()
    lines = [START, "", f"Every path or name of a file, folder or model is {path_rule}."]
    for title, rows in sections:
        lines += ["", f"| {title} key | valid values |", "|---|---|"]
        lines += [f"| `{key}` | {text} |" for key, text in rows if not text.startswith(path_rule)]
    return "\n".join([*lines, "", END])


def replace_table(readme: str) -> str:
    """The README's text with its table rewritten between the two markers."""
    if START not in readme or END not in readme:
        raise ValueError(f"the README has no {START} ... {END} block to fill")
    before, rest = readme.split(START, 1)
    return before + valid_values_markdown() + rest.split(END, 1)[1]
