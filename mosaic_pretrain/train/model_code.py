"""`export --with-code`: the model's own code beside its weights, so that
`AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)` loads it where only torch and
transformers are installed (as MosaicML's published models load).

The files are those of `mosaic_pretrain.model` that the model classes import, found by reading
their imports, with our package's absolute imports made relative (transformers copies a remote
model's relative imports along with it). The config's `auto_map` names the classes.
"""

import ast
import json
from pathlib import Path

import mosaic_pretrain
from mosaic_pretrain.model import configuration, modeling

PACKAGE = Path(mosaic_pretrain.__file__).parent
ENTRY_MODULES = (configuration, modeling)
AUTO_MAP = {
    "AutoConfig": "configuration.MosaicBertConfig",
    "AutoModel": "modeling.MosaicBertModel",
    "AutoModelForMaskedLM": "modeling.MosaicBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling.MosaicBertForSequenceClassification",
}
# transformers refuses remote code whose imports are not installed, except imports inside a
# `try`. flash-attn is an optional GPU extra: its import is rewritten as a call, which the check
# does not read (our own code keeps the import statement, which torch.compile traces best).
REWRITES = {
    "from flash_attn import flash_attn_varlen_func": (
        'flash_attn_varlen_func = importlib.import_module("flash_attn").flash_attn_varlen_func'
    ),
}


def _our_imports(tree: ast.Module) -> list[str]:
    """Modules of this package that a module imports, as file stems (`padding`, `errors`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == PACKAGE.name:
                if len(parts) == 1:
                    raise RuntimeError(f"`from {PACKAGE.name} import ...` cannot be made relative")
                found.append(parts[-1])
        elif isinstance(node, ast.Import) and any(
            alias.name.split(".")[0] == PACKAGE.name for alias in node.names
        ):
            raise RuntimeError(f"`import {PACKAGE.name}...` cannot be made relative")
    return found


def _relative(source: str) -> str:
    """`source` with this package's absolute imports relative to the copied folder."""
    lines = []
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        for old, new in REWRITES.items():
            if stripped == old:
                line = line.replace(old, new)
        for prefix in (f"from {PACKAGE.name}.model.", f"from {PACKAGE.name}."):
            if stripped.startswith(prefix):
                line = line.replace(prefix, "from .", 1)
                break
        lines.append(line)
    return "".join(lines)


def _source_path(stem: str) -> Path:
    path = PACKAGE / "model" / f"{stem}.py"
    return path if path.is_file() else PACKAGE / f"{stem}.py"


def _closure(stem: str) -> set[str]:
    """The modules of ours that `stem` needs, directly or through others."""
    needed, pending = set(), [stem]
    while pending:
        for imported in _our_imports(ast.parse(_source_path(pending.pop()).read_text())):
            if imported not in needed:
                needed.add(imported)
                pending.append(imported)
    return needed - {stem}


def model_files() -> dict[str, str]:
    """{file name: its relative-import source} for the model classes and what they import."""
    entries = [Path(module.__file__).stem for module in ENTRY_MODULES]
    stems = set(entries).union(*(_closure(entry) for entry in entries))
    files: dict[str, str] = {}
    for stem in sorted(stems):
        path = _source_path(stem)
        source = _relative(path.read_text())
        left = _our_imports(ast.parse(source))
        if left:
            raise RuntimeError(f"{path.name} still imports {left} from {PACKAGE.name}")
        indirect = sorted(_closure(stem) - set(_our_imports(ast.parse(path.read_text()))))
        if stem in entries and indirect:
            source += "\n\n# transformers copies only the modules a remote file imports itself.\n"
            source += "".join(
                f"from .{module} import __name__ as _needs_{module}  # noqa: E402\n"
                for module in indirect
            )
        files[f"{stem}.py"] = source
    return files


def write_model_code(directory: Path) -> list[str]:
    """Copy the model's code into a saved model `directory` and name its classes in
    config.json's auto_map; returns the files written."""
    header = (
        f"# Written by mosaic-pretrain {mosaic_pretrain.__version__} (export --with-code): the "
        "code of the model saved here.\n"
    )
    written = []
    for name, source in sorted(model_files().items()):
        (directory / name).write_text(header + source)
        written.append(name)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return written
