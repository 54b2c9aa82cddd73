"""The GPU check's parts that touch torch, each run in its own subprocess by `gpu_check.py`.

`python -m mosaic_pretrain.bench.gpu_check_parts PART --scratch DIR [options]` does one part
and writes its result as `DIR/NAME.json`. A part that fails exits non-zero with its traceback
on stderr, which the parent logs; only then does the parent learn anything went wrong, so a
crash, a hang or a segfault in one part (a compile, a kernel, a driver) costs that part alone.

Parts:
- `probe`: versions of everything the check depends on, whether Composer and our Trainer path
  import with this torch (the GPU machine's torch is newer than Composer's pin), and the two
  peaks MFU divides by (the bf16 spec and a measured matmul ceiling).
- `data`: the benchmark corpus as MDS, and the pool of collated rows every step part cuts its
  batches from (saved once, so that each configuration steps through the same batches).
- `step`: one configuration of the training-step benchmark (`training_step.measure`).
- `end_to_end`: a generated recipe trained by the `python -m mosaic_pretrain train` command
  line, read back through `training_step.end_to_end_summary`.
"""

import argparse
import importlib
import importlib.metadata
import json
import platform
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

PLAN_FILE = "plan.json"
PROBE_FILE = "probe.json"
DATA_FILE = "data.json"
POOL_FILE = "pool.pt"
END_TO_END_FILE = "end_to_end.json"

# What the check records the version of, by import name (flash_attn may well be absent).
VERSIONED_MODULES = (
    "composer",
    "streaming",
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "torchmetrics",
    "torchvision",  # composer and streaming import it: it must match this torch
    "flash_attn",
)
NOT_INSTALLED = "not installed"


def module_version(name: str) -> tuple[str, str | None]:
    """(version or why there is none, the folder it was imported from). Importing it, not
    reading metadata, is what tells whether the carried wheel shadows the image's copy."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return NOT_INSTALLED, None
        return f"import failed: {_one_line(error)}", None
    except Exception as error:  # a package refusing this torch may raise anything
        return f"import failed: {_one_line(error)}", None
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    location = getattr(module, "__file__", None)
    return str(version), str(Path(location).parent) if location else None


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()
    return text[0][:300] if text else type(error).__name__


def import_error(name: str) -> str | None:
    """None when `name` imports, else its error on one line."""
    try:
        importlib.import_module(name)
    except Exception as error:
        return _one_line(error)
    return None


def probe(scratch: Path, plan: dict) -> dict:
    """Everything it can find out, each piece on its own: a device that does not work must not
    cost the versions, which say why."""
    import torch

    from mosaic_pretrain.device_info import device_description

    device = torch.device(plan["device"])
    found = {"python": platform.python_version(), "executable": sys.executable}
    found.update(torch=torch.__version__, cuda=torch.version.cuda)
    versions, paths = {}, {}
    for name in VERSIONED_MODULES:
        versions[name], paths[name] = module_version(name)
    found["versions"] = versions
    found["paths"] = paths
    found["composer_error"] = import_error("composer")
    # Our Trainer path imports more of Composer than `import composer` does.
    found["trainer_error"] = import_error("mosaic_pretrain.commands.train")
    found["peak_bf16_flops"] = found["matmul_ceiling_flops"] = None
    try:
        found.update(device_description(device))
        found["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
        torch.ones(1, device=device).sum().item()  # a kernel really runs there
        found["device_error"] = None
    except Exception as error:
        found["device_error"] = _one_line(error)
        traceback.print_exc()
        return found
    try:
        from mosaic_pretrain.bench.training_step import bf16_peak_flops, matmul_ceiling_flops

        found["peak_bf16_flops"] = bf16_peak_flops(device)
        found["matmul_ceiling_flops"] = matmul_ceiling_flops(device)
    except Exception as error:
        found["peaks_error"] = _one_line(error)
        traceback.print_exc()
    return found


def data(scratch: Path, plan: dict) -> dict:
    import torch

    from mosaic_pretrain.bench.training_step import (
        pool_description,
        sample_pool,
        write_benchmark_corpus,
    )

    mds = write_benchmark_corpus(scratch / "data", plan["rows"], plan["max_documents"])
    pool = sample_pool(mds, plan["microbatch"] * plan["batches"], plan["seq_len"])
    torch.save(pool, scratch / POOL_FILE)
    return {"mds": str(mds), "rows": len(pool["input_ids"]), **pool_description(pool, plan["rows"])}


def step(scratch: Path, plan: dict, model: str, backend: str, compiled: bool, optimizer: str):
    import torch

    from mosaic_pretrain.bench.training_step import batches_from_pool, measure

    device = torch.device(plan["device"])
    probe_file = scratch / PROBE_FILE  # absent if the probe failed: then no MFU, still a time
    probed = json.loads(probe_file.read_text()) if probe_file.exists() else {}
    pool = torch.load(scratch / POOL_FILE)
    batches = [
        {name: tensor.to(device) for name, tensor in batch.items()}
        for batch in batches_from_pool(pool, plan["microbatch"], plan["batches"])
    ]
    result = measure(
        model,
        backend,
        compiled,
        batches,
        device,
        plan["steps"],
        plan["warmup"],
        (probed.get("peak_bf16_flops"), probed.get("matmul_ceiling_flops")),
        preset=plan["preset"],
        overrides=plan["model_overrides"],
        compile_backend=plan["compile_backend"],
        optimizer=optimizer,
    )
    return asdict(result)


def end_to_end(scratch: Path, plan: dict, backend: str) -> dict:
    import torch
    import yaml

    from mosaic_pretrain.bench.training_step import end_to_end_recipe, end_to_end_summary

    batches = plan["end_to_end_batches"]
    folder = scratch / "end_to_end"
    recipe = end_to_end_recipe(
        Path(json.loads((scratch / DATA_FILE).read_text())["mds"]),
        plan["preset"],
        backend,
        plan["microbatch"],
        plan["seq_len"],
        batches,
        max(1, batches // 3),  # SpeedMonitor's window: the last third, past the warm-up
        torch.device(plan["device"]),
        folder / "run",
        num_workers=plan["end_to_end_workers"],
        overrides=plan["model_overrides"],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # What `python -m mosaic_pretrain train RECIPE` runs, the command line included, in this
    # process (already its own subprocess of the check): one Python start-up fewer.
    from mosaic_pretrain.cli import main as command_line

    print(f"$ python -m mosaic_pretrain train {path}", flush=True)
    if (code := command_line(["train", str(path)])) != 0:
        raise RuntimeError(f"mosaic_pretrain train exited with code {code}")
    return end_to_end_summary(recipe)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("probe", "data", "step", "end_to_end"))
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--name", help="the result file's name (default: the part's)")
    parser.add_argument("--model")
    parser.add_argument("--backend")
    parser.add_argument("--compiled", action="store_true")
    parser.add_argument("--optimizer", default="decoupled_adamw")
    args = parser.parse_args(argv)
    plan = json.loads((args.scratch / PLAN_FILE).read_text())
    if args.part == "probe":
        result = probe(args.scratch, plan)
    elif args.part == "data":
        result = data(args.scratch, plan)
    elif args.part == "step":
        result = step(args.scratch, plan, args.model, args.backend, args.compiled, args.optimizer)
    else:
        result = end_to_end(args.scratch, plan, args.backend)
    (args.scratch / f"{args.name or args.part}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
