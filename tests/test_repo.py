"""The README's promises that the rest of the repo must keep."""

import ast
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


# The house from the ground up (DESIGN.md, "Layers"): a module may import only from its own package
# or from a layer beneath it. Top-level modules count as their own layer.
LAYERS = {
    "mosaic_pretrain": 0,  # the package's __init__ (its version)
    "errors": 0,
    "device_info": 0,
    "folder_lock": 1,  # one run per folder: every command that writes a folder takes it
    "ranges": 1,  # each field's valid values, read by the recipe, sweep and convert checks
    "model": 1,
    "smoke": 2,
    "config": 2,
    "data": 2,
    "callbacks": 3,
    "train": 4,
    "glue": 5,
    "lengths": 5,  # eval-lengths: models, data and train, beside glue
    "commands": 6,
    "ablation": 7,
    "cli": 8,
    "__main__": 9,
    "bench": 9,  # benchmarks time the commands (the GPU check runs the command line itself)
}


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, at any depth of its code
    (an import inside a function still ties the two)."""
    graph = {}
    for path in (ROOT / "mosaic_pretrain").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported.update(name for name in names if name.split(".")[0] == "mosaic_pretrain")
        graph[module] = imported
    return graph


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else parts[0]
    assert unit in LAYERS, f"{module}: give its package a layer in LAYERS"
    return unit, LAYERS[unit]


def test_each_package_imports_only_the_layers_beneath_it():
    upward = []
    for module, imported in _imports().items():
        unit, layer = _layer(module)
        for target in imported:
            target_unit, target_layer = _layer(target)
            if target_unit != unit and target_layer >= layer:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_modules_import_each_other_in_a_circle():
    graph = _imports()
    modules = set(graph)

    def resolve(name: str) -> str | None:  # `from mosaic_pretrain.model import X` is the package
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {module: {resolve(target) for target in graph[module]} - {None} for module in graph}
    circles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        if module in done:
            return
        for target in sorted(edges[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert not circles, circles
