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
from mosaic_pretrain.model.attention import AUTO as AUTO_BACKEND

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


def _module_path(dotted: str) -> Path:
    """The source file of a module of ours the model imports: `mosaic_pretrain.model.X`, or a
    top-level `mosaic_pretrain.X` (the layers beneath the model); nothing else is copyable."""
    parts = dotted.split(".")
    if len(parts) == 3 and parts[1] == "model":
        return PACKAGE / "model" / f"{parts[2]}.py"
    if len(parts) == 2 and parts[1] != "model":
        return PACKAGE / f"{parts[1]}.py"
    raise RuntimeError(
        f"the model code imports from {dotted}, which export --with-code cannot copy: import "
        "from the module that defines the name (mosaic_pretrain.model.X or mosaic_pretrain.X)"
    )


def _our_imports(path: Path) -> set[Path]:
    """The files of ours that the module at `path` imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            raise RuntimeError(f"{path}: export --with-code copies absolute imports only")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE.name:
            found.add(_module_path(node.module))
        elif isinstance(node, ast.Import) and any(
            alias.name.split(".")[0] == PACKAGE.name for alias in node.names
        ):
            raise RuntimeError(f"{path}: `import {PACKAGE.name}...` cannot be made relative")
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


def _closure(path: Path) -> set[Path]:
    """The files of ours that the module at `path` needs, directly or through others."""
    needed, pending = set(), [path]
    while pending:
        for imported in _our_imports(pending.pop()) - needed:
            needed.add(imported)
            pending.append(imported)
    return needed - {path}


def model_files() -> dict[str, str]:
    """{file name: its relative-import source} for the model classes and what they import."""
    entries = [Path(module.__file__) for module in ENTRY_MODULES]
    paths = set(entries).union(*(_closure(entry) for entry in entries))
    names = [path.name for path in paths]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two model modules share a file name: {sorted(names)}")
    files: dict[str, str] = {}
    for path in sorted(paths):
        source = _relative(path.read_text())
        left = [
            node.module
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == PACKAGE.name
        ]
        if left:
            raise RuntimeError(f"{path.name} still imports from {left[0]} after rewriting")
        indirect = (
            sorted(other.stem for other in _closure(path) - _our_imports(path))
            if path in entries
            else []
        )
        if indirect:
            source += "\n\n# transformers copies only the modules a remote file imports itself.\n"
            source += "".join(
                f"from .{module} import __name__ as _needs_{module}  # noqa: E402\n"
                for module in indirect
            )
        files[path.name] = source
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
    # The kernel a run trained with (flash_attn on its GPU) may not exist where the model is
    # shared; the function is the same with every backend, and `auto` picks the best one there.
    config["attention_backend"] = AUTO_BACKEND
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return written
