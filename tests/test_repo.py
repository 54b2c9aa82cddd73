"""The README's promises that the rest of the repo must keep."""

import re
import subprocess
import sys
from pathlib import Path

from mosaic_pretrain.model import MosaicBertConfig, MosaicBertForMaskedLM, hf_bert_for_masked_lm

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```$", text, re.S | re.M)]


def test_readme_opens_with_the_two_commands():
    first, second = bash_blocks(README)[:2]
    before_first = README[: README.index("```bash")]
    assert "```" not in before_first  # nothing precedes them but prose
    assert "\n" not in first and "mosaic-pretrain" in first
    assert "\n" not in second and "pytest" in second
    for command in (first, second):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")


def test_ci_runs_the_readme_test_command():
    printed = subprocess.run(
        ["bash", str(ROOT / ".ci/run"), "--print-command"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == bash_blocks(README)[1]


def test_readme_states_the_parameter_counts():
    for preset in ("base", "large"):
        config = MosaicBertConfig.from_preset(preset)
        for model in (MosaicBertForMaskedLM(config), hf_bert_for_masked_lm(config)):
            count = sum(p.numel() for p in model.parameters())
            assert f"{count:,}" in README, (preset, type(model).__name__)


def test_readme_lists_every_feed_forward_variant_with_its_parameter_count():
    from mosaic_pretrain.ablation.parameters import parameter_counts, render_parameter_table

    assert render_parameter_table(parameter_counts("base")) in README


def test_code_is_ruff_clean():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
