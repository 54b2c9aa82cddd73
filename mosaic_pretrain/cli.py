"""`mosaic-pretrain`: the command line. User errors print one line and exit with code 2."""

import argparse
import logging
import os
import sys
from pathlib import Path

from mosaic_pretrain.errors import MosaicPretrainError, Problems, RunStopped


class CheckFailed(MosaicPretrainError):
    """`check` found problems (each already printed on its own line)."""


class JobsFailed(MosaicPretrainError):
    """Some jobs of a sweep failed; the others finished and are reported."""


class PointSweepsFailed(MosaicPretrainError):
    """Pretraining finished, but the GLUE sweeps of some points have no result."""


USER_ERROR_EXIT_CODE = 2


def _add_smoke(subparsers: argparse._SubParsersAction) -> None:
    from mosaic_pretrain.model.attention import ATTENTION_BACKEND_CHOICES
    from mosaic_pretrain.model.configuration import PRESETS
    from mosaic_pretrain.smoke import PRECISIONS

    smoke = subparsers.add_parser(
        "smoke", help="train MosaicBERT on a synthetic batch for a few steps (needs no data)"
    )
    smoke.add_argument("--preset", choices=sorted(PRESETS), default="mini")
    smoke.add_argument("--steps", type=int, default=20)
    smoke.add_argument("--batch-size", type=int, default=16)
    smoke.add_argument("--seq-len", type=int, default=128)
    smoke.add_argument("--attention-backend", choices=ATTENTION_BACKEND_CHOICES, default="auto")
    smoke.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    smoke.add_argument("--precision", choices=PRECISIONS, default="fp32")
    smoke.add_argument("--seed", type=int, default=0)
    smoke.set_defaults(handler=_run_smoke)


def _run_smoke(args: argparse.Namespace) -> None:
    from mosaic_pretrain.smoke import run_smoke

    run_smoke(
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        attention_backend=args.attention_backend,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
    )


def _add_document_arguments(parser: argparse.ArgumentParser) -> None:
    """How documents are read out of sources: the same for convert and tokenizer."""
    from mosaic_pretrain.data.sources import TXT_SPLITS

    parser.add_argument("--text-field", default="text", help="the JSON key holding the text")
    parser.add_argument(
        "--txt-split",
        choices=TXT_SPLITS,
        default="paragraphs",
        help="what a document is in a .txt file",
    )
    parser.add_argument(
        "--skip-empty", action="store_true", help="drop empty documents instead of stopping"
    )


def _add_tokenizer(subparsers: argparse._SubParsersAction) -> None:
    from mosaic_pretrain.data.tokenizer_training import KINDS, TokenizerOptions

    defaults = TokenizerOptions(sources=("",))
    trained = subparsers.add_parser(
        "tokenizer",
        help="train a BERT-style tokenizer on your own text (WordPiece, BPE or Unigram)",
        description="Trains a tokenizer with Hugging Face tokenizers on the documents of "
        "--source (read as convert reads them) and writes it to --out, where tokenizer_name in "
        "a recipe, convert --tokenizer and a GLUE sweep take it; with a manifest "
        "(tokenizer_training.json) and a summary measured on held-back documents.",
    )
    trained.add_argument(
        "--source",
        nargs="+",
        required=True,
        help="files or folders of .jsonl/.txt (optionally .gz/.bz2/.xz), or one hf:NAME dataset",
    )
    trained.add_argument("--out", required=True, help="new directory to write")
    trained.add_argument("--type", choices=KINDS, default=defaults.kind, dest="kind")
    trained.add_argument(
        "--vocab-size",
        type=int,
        default=defaults.vocab_size,
        help=f"tokens, special ones included; a multiple of 64 (default {defaults.vocab_size})",
    )
    case = trained.add_mutually_exclusive_group()
    case.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    case.add_argument("--uncased", action="store_true", help="lowercase (the default)")
    accents = trained.add_mutually_exclusive_group()
    accents.add_argument(
        "--strip-accents",
        action="store_true",
        default=None,
        help="remove accents (default: when lowercasing, as BERT does)",
    )
    accents.add_argument(
        "--keep-accents", action="store_false", dest="strip_accents", help="keep accents"
    )
    trained.add_argument(
        "--min-frequency", type=int, default=defaults.min_frequency, help="of a learned piece"
    )
    trained.add_argument("--max-documents", type=int, default=None, help="read at most this many")
    trained.add_argument("--hf-config", default=None, help="Hugging Face dataset config, e.g. en")
    trained.add_argument("--hf-split", default=defaults.hf_split, help="the dataset's split")
    _add_document_arguments(trained)
    trained.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    trained.add_argument("--no-progress", action="store_true")
    trained.set_defaults(handler=_run_tokenizer)


def _run_tokenizer(args: argparse.Namespace) -> None:
    from mosaic_pretrain.data.sources import SourceOptions
    from mosaic_pretrain.data.tokenizer_training import TokenizerOptions, train_tokenizer

    options = TokenizerOptions(
        sources=tuple(args.source),
        kind=args.kind,
        vocab_size=args.vocab_size,
        lowercase=not args.cased,
        strip_accents=args.strip_accents,
        min_frequency=args.min_frequency,
        max_documents=args.max_documents,
        hf_config=args.hf_config,
        hf_split=args.hf_split,
        source_options=SourceOptions(args.text_field, args.txt_split, args.skip_empty),
    )
    train_tokenizer(options, args.out, overwrite=args.overwrite, progress=not args.no_progress)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    from mosaic_pretrain.data.convert import COMPRESSIONS, OUTPUT_FORMATS

    convert = subparsers.add_parser(
        "convert",
        help="turn documents (local .jsonl/.txt, or hf:NAME) into MDS shards for training",
        description="Writes OUT/train and OUT/val as MDS shards. Without --source, converts the "
        "public-domain English corpus shipped with the package.",
    )
    convert.add_argument(
        "--source",
        nargs="+",
        default=None,
        help="files or folders of .jsonl/.txt (optionally .gz/.bz2/.xz), or one "
        "hf:NAME Hugging Face dataset (e.g. hf:allenai/c4 --hf-config en)",
    )
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="text",
        help="store raw text, or pre-tokenized input_ids",
    )
    convert.add_argument("--tokenizer", default="bert-base-uncased")
    convert.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of local documents routed to val (seeded)",
    )
    convert.add_argument("--val-source", nargs="+", default=(), help="local files for val")
    convert.add_argument("--hf-config", default=None, help="Hugging Face dataset config, e.g. en")
    convert.add_argument(
        "--hf-split",
        action="append",
        default=None,
        metavar="OURS=THEIRS",
        help="map our split to the dataset's (default train=train, "
        "val=validation); repeat for each",
    )
    convert.add_argument(
        "--max-documents",
        type=int,
        default=None,
        help="stop each split's source after this many documents",
    )
    _add_document_arguments(convert)
    convert.add_argument("--compression", choices=COMPRESSIONS, default="zstd")
    convert.add_argument("--shard-size", default="64mb", help="e.g. 64mb")
    convert.add_argument("--workers", type=int, default=1, help="tokenizing processes")
    convert.add_argument("--seed", type=int, default=17, help="seed of the val assignment")
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing conversion made with other options",
    )
    convert.add_argument("--no-progress", action="store_true")
    convert.add_argument(
        "--take-over-lock",
        action="store_true",
        help="take over another host's lock on --out now (its conversion is known to be dead)",
    )
    convert.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> None:
    from mosaic_pretrain.data.convert import ConvertOptions, convert, parse_size
    from mosaic_pretrain.data.sources import SourceOptions
    from mosaic_pretrain.errors import ConfigError

    hf_splits = ConvertOptions.hf_splits
    if args.hf_split:
        pairs = [mapping.split("=", 1) for mapping in args.hf_split]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise ConfigError("--hf-split takes OURS=THEIRS, e.g. --hf-split val=validation")
        hf_splits = tuple((ours, theirs) for ours, theirs in pairs)
    options = ConvertOptions(
        **({"sources": tuple(args.source)} if args.source else {}),
        output_format=args.format,
        tokenizer_name=args.tokenizer,
        val_fraction=args.val_fraction,
        val_sources=tuple(args.val_source),
        hf_config=args.hf_config,
        hf_splits=hf_splits,
        max_documents=args.max_documents,
        seed=args.seed,
        compression=args.compression,
        shard_size_bytes=parse_size(args.shard_size),
        source_options=SourceOptions(args.text_field, args.txt_split, args.skip_empty),
    )
    convert(
        options,
        args.out,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        take_over_lock=args.take_over_lock,
    )


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="pretrain from a YAML recipe (Composer Trainer)",
        description="Pretrain from RECIPE, with key=value overrides, e.g. optimizer.lr=1e-4.",
    )
    train.add_argument("recipe", help="a YAML recipe, e.g. configs/pretrain/smoke.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.set_defaults(handler=_run_train)


def _peeked_recipe(args: argparse.Namespace, ablation: bool):
    """The recipe's types, loaded (with their one-line errors, those of the full check), and a
    folder that another live run holds refused, all in well under a second rather than after the
    seconds that torch, transformers and Composer take to import. The full check (which builds
    the model's config, importing transformers) is left to the run, which also takes the lock
    itself, atomically, later. Rank 0 alone looks, as it alone takes the lock (the others would
    see its lock and take it for a rival's)."""
    from mosaic_pretrain.config.folders import recipe_folder_lock
    from mosaic_pretrain.config.load import load_structured
    from mosaic_pretrain.config.schema import PretrainConfig
    from mosaic_pretrain.errors import FolderInUseError

    config = load_structured(PretrainConfig, args.recipe, args.overrides)
    if os.environ.get("RANK", "0") != "0" or (config.ablation is not None) != ablation:
        return config  # the wrong command for the recipe: the command says so in its own words
    try:
        problem = recipe_folder_lock(config).problem()
    except (MosaicPretrainError, KeyError, IndexError, ValueError):
        return config  # a bad folder template or lock timeout: the full check names it
    if problem is not None:
        raise FolderInUseError(problem)
    return config


def _run_train(args: argparse.Namespace) -> None:
    config = _peeked_recipe(args, ablation=False)

    from composer.utils import dist

    from mosaic_pretrain.commands.train import train
    from mosaic_pretrain.config.load import validate
    from mosaic_pretrain.glue.pretraining_points import GlueSweeps

    validate(config, world_size=dist.get_world_size())  # the rest of load_config
    trainer = train(config)  # ends with its summary on the console
    failed = {
        point: why
        for callback in trainer.state.callbacks
        if isinstance(callback, GlueSweeps)
        for point, why in callback.failed.items()
    }
    if failed:
        for point, why in failed.items():
            print(f"GLUE point {point}: {why}", file=sys.stderr)
        raise PointSweepsFailed(
            f"the GLUE sweeps of {len(failed)} point(s) have no result ({', '.join(failed)}); "
            "rerun the same command with autoresume=true (and export_folder=null once the "
            "export exists) to run them again"
        )


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="write a Hugging Face directory from a training checkpoint",
        description="Rebuilds the model from the run's resolved_config.yaml (beside the "
        "checkpoint, or --recipe) and writes config, safetensors weights and tokenizer.",
    )
    export.add_argument("checkpoint", help="a Composer checkpoint (.pt) written by train")
    export.add_argument("out_dir", help="new directory to write")
    export.add_argument("--recipe", default=None, help="the run's recipe, if not beside it")
    export.add_argument(
        "--with-code",
        action="store_true",
        help="also write the model's code, so transformers loads the directory with "
        "trust_remote_code=True where mosaic_pretrain is not installed",
    )
    export.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from mosaic_pretrain.train.export import export_checkpoint

    written = export_checkpoint(args.checkpoint, args.out_dir, args.recipe, args.with_code)
    print(f"exported to {written}")


def _add_import(subparsers: argparse._SubParsersAction) -> None:
    imported = subparsers.add_parser(
        "import",
        help="turn MosaicML's published MosaicBERT weights into one of our model directories",
        description="Reads a MosaicBERT masked-LM model in MosaicML's layout (a directory like "
        "the hub's mosaicml/mosaic-bert-base, a Composer checkpoint of MosaicML's BERT benchmark "
        "code, or a hub name) and writes config, safetensors weights and tokenizer to OUT_DIR. "
        "The source is only read.",
    )
    imported.add_argument("source", help="model directory, Composer checkpoint (.pt) or hub name")
    imported.add_argument("out_dir", help="new directory to write")
    imported.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer to save with it (default: the source's own, else bert-base-uncased, "
        "which MosaicML's published models use)",
    )
    imported.add_argument(
        "--config", default=None, help="the model's config.json, if not in the source"
    )
    imported.set_defaults(handler=_run_import)


def _run_import(args: argparse.Namespace) -> None:
    from mosaic_pretrain.train.import_weights import import_mosaic_bert

    written = import_mosaic_bert(args.source, args.out_dir, args.tokenizer, args.config)
    print(f"imported to {written}")


def _add_glue(subparsers: argparse._SubParsersAction) -> None:
    glue = subparsers.add_parser(
        "glue",
        help="finetune a pretrained model on GLUE tasks (tasks x seeds, in parallel) and report",
        description="Runs the jobs of SWEEP (with key=value overrides, e.g. tasks=[sst2,mrpc]) "
        "that have no result yet in its output folder, then writes report.json/.csv/.png there.",
    )
    glue.add_argument("sweep", help="a sweep YAML, e.g. configs/glue/mosaic-bert-base.yaml")
    glue.add_argument("overrides", nargs="*", metavar="key=value")
    glue.add_argument(
        "--report-only", action="store_true", help="run nothing; report the finished jobs"
    )
    glue.set_defaults(handler=_run_glue)


def _run_glue(args: argparse.Namespace) -> None:
    from mosaic_pretrain.glue.config import load_sweep
    from mosaic_pretrain.glue.sweep import glue

    outcome, _, table = glue(load_sweep(args.sweep, args.overrides), args.report_only)
    print(table)
    print(f"report: {outcome.folder}/report.json, report.csv, report.png")
    if outcome.failed:
        raise JobsFailed(
            f"{len(outcome.failed)} of {len(outcome.jobs)} jobs failed "
            f"({', '.join(outcome.failed)}); logs in {outcome.folder}/jobs/NAME/job.log; "
            "rerun the same command to run only the unfinished jobs"
        )


def _add_ablate(subparsers: argparse._SubParsersAction) -> None:
    ablate = subparsers.add_parser(
        "ablate",
        help="pretrain a recipe once per value of one key and compare eval loss at equal steps",
        description="Runs RECIPE (with key=value overrides) once per value of its "
        "ablation.key (and per ablation.seeds), skipping finished runs and continuing "
        "unfinished ones, then writes ablation.md/.csv/.json/.png to ablation.output_folder.",
    )
    ablate.add_argument("recipe", help="a recipe with an ablation section, e.g. "
                        "configs/pretrain/ablate-activations.yaml")  # fmt: skip
    ablate.add_argument("overrides", nargs="*", metavar="key=value")
    ablate.add_argument(
        "--report-only", action="store_true", help="train nothing; report the finished runs"
    )
    ablate.set_defaults(handler=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> None:
    from pathlib import Path

    _peeked_recipe(args, ablation=True)  # plan_runs loads it again, with the ablation's values

    from mosaic_pretrain.ablation.command import run_ablation

    report, table = run_ablation(Path(args.recipe), args.overrides, args.report_only)
    print(table)
    failed = [run["value"] for run in report["runs"] if run["status"] == "failed"]
    folder = report["output_folder"]
    print(f"report: {folder}/ablation.md, ablation.csv, ablation.json, ablation.png")
    if failed:
        raise JobsFailed(
            f"runs failed for {', '.join(failed)} (errors in {folder}/ablation.json); rerun "
            "the same command to retry them"
        )


def _add_pareto(subparsers: argparse._SubParsersAction) -> None:
    from mosaic_pretrain.glue.pareto import X_AXES

    pareto = subparsers.add_parser(
        "pareto",
        help="GLUE score against pretraining time or cost for one or more runs, with the Pareto "
        "frontier (PNG + CSV)",
        description="Draws the GLUE points of each RUN_DIR (a run's save folder, with the "
        "glue_points/ of callbacks.glue_sweep) and marks the points no other beats on both "
        "axes. Runs with the same label form one series (mean and std over them).",
    )
    pareto.add_argument("runs", nargs="+", metavar="RUN_DIR")
    pareto.add_argument("--x", choices=list(X_AXES), default="wall_hours", help="the cost axis")
    pareto.add_argument("--task", default=None, help="a task's score instead of the GLUE average")
    pareto.add_argument(
        "--label", action="append", default=None, help="one per RUN_DIR (default: run names)"
    )
    pareto.add_argument("--out", default="pareto", help="folder for the PNG and CSV")
    pareto.add_argument(
        "--gpu-hour-price",
        type=float,
        default=None,
        help="price of a device-hour, for runs that recorded no cost",
    )
    pareto.set_defaults(handler=_run_pareto)


def _run_pareto(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mosaic_pretrain.glue.pareto import pareto

    output = pareto(
        [Path(run) for run in args.runs],
        args.x,
        args.task,
        args.label,
        Path(args.out),
        args.gpu_hour_price,
    )
    print(f"{'series':<20} {'point':<12} {args.x:>12} {'score':>7} {'frontier':>8}")
    for point in output.points:
        mark = "*" if point.frontier else ("(series)" if point.series_frontier else "")
        print(f"{point.series:<20} {point.point:<12} {point.x:>12.6g} {point.y:>7.2f} {mark:>8}")
    for folder, points in output.failed.items():
        print(f"not drawn: the sweeps of {', '.join(points)} in {folder} failed")
    print(f"written: {output.png}, {output.csv}")


def _add_eval_lengths(subparsers: argparse._SubParsersAction) -> None:
    from mosaic_pretrain.lengths.command import EvalOptions
    from mosaic_pretrain.lengths.evaluate import DEVICES

    defaults = EvalOptions(models=(), lengths=())
    evaluated = subparsers.add_parser(
        "eval-lengths",
        help="MLM loss of models at several sequence lengths: does it extrapolate?",
        description="Scores each MODEL (a Composer checkpoint .pt, a run's save folder, or a "
        "Hugging Face directory) on rows of each --lengths L: [CLS] + a document's first L-2 "
        "tokens + [SEP], in the model's own tokenizer, from the same documents at every length "
        "(only those with at least longest-L - 2 tokens). 15% of tokens are masked (80/10/10, "
        "seeded, alike at every length). A model with a learned position table (BERT) is not run "
        "past it. Writes lengths.json, lengths.csv and lengths.png to --out.",
    )
    evaluated.add_argument("models", nargs="+", metavar="MODEL")
    evaluated.add_argument(
        "--lengths",
        required=True,
        help="row lengths in tokens, increasing, comma-separated, e.g. 128,256,512,1024,2048",
    )
    evaluated.add_argument(
        "--data",
        nargs="+",
        default=None,
        metavar="DIR|FILE",
        help="an MDS split (or a convert output folder: its val split), or .jsonl/.txt files "
        "and folders (default: the shipped corpus's validation documents)",
    )
    evaluated.add_argument("--out", default=str(defaults.out), help="folder for the report")
    evaluated.add_argument(
        "--label", action="append", default=None, help="one per MODEL (default: path names)"
    )
    evaluated.add_argument("--batch-size", type=int, default=defaults.batch_size)
    evaluated.add_argument("--seed", type=int, default=defaults.seed, help="of the masking")
    evaluated.add_argument("--device", choices=DEVICES, default=defaults.device)
    evaluated.add_argument(
        "--min-documents",
        type=int,
        default=defaults.min_documents,
        help="stop with an error when fewer documents are long enough",
    )
    evaluated.add_argument(
        "--max-documents",
        type=int,
        default=defaults.max_documents,
        help="score at most this many documents (the first long enough)",
    )
    _add_document_arguments(evaluated)
    evaluated.set_defaults(handler=_run_eval_lengths)


def _run_eval_lengths(args: argparse.Namespace) -> None:
    from mosaic_pretrain.data.sources import SourceOptions
    from mosaic_pretrain.lengths.command import EvalOptions, eval_lengths
    from mosaic_pretrain.lengths.rows import parse_lengths

    options = EvalOptions(
        models=tuple(args.models),
        lengths=tuple(parse_lengths(args.lengths)),
        data=tuple(args.data or ()),
        out=Path(args.out),
        labels=tuple(args.label or ()),
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        min_documents=args.min_documents,
        max_documents=args.max_documents,
        source_options=SourceOptions(args.text_field, args.txt_split, args.skip_empty),
    )
    _, table, files = eval_lengths(options)
    print(table)
    print(f"report: {files[0]}, {files[1].name}, {files[2].name}")


def _add_check(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check",
        help="find every problem that would stop a pretraining run or GLUE sweep, before "
        "spending compute",
        description="Validates RECIPE (with key=value overrides), its tokenizer, data, save "
        "folder and the checkpoint it would continue, or a GLUE sweep's tasks, data and "
        "starting point; prints each problem on one line.",
    )
    check.add_argument("recipe", help="a pretraining recipe or a GLUE sweep YAML")
    check.add_argument("overrides", nargs="*", metavar="key=value")
    check.add_argument(
        "--verify-hashes",
        action="store_true",
        help="also read every local MDS shard and compare it with the hash in its index "
        "(slow; by default shards are checked by size)",
    )
    from mosaic_pretrain.train.estimate import DEFAULT_GPU, DEFAULT_GPUS, DEFAULT_MFU

    estimate = check.add_argument_group(
        "estimate", "with --estimate, first print the run's tokens, FLOPs, time, cost and memory"
    )
    estimate.add_argument(
        "--estimate",
        action="store_true",
        help="work out what the pretraining recipe will cost before it runs (arithmetic on the "
        "recipe and a small read of its train data), then check it as usual",
    )
    estimate.add_argument(
        "--gpu",
        default=None,
        metavar="NAME|FLOPS",
        help=f"a100, h100 (h100-sxm), h200 (h200-sxm) or another key of Composer's "
        f"GPU_AVAILABLE_FLOPS, or a peak in FLOP/s such as 989e12 (default: {DEFAULT_GPU}, "
        "the paper's)",
    )
    estimate.add_argument(
        "--gpus",
        type=int,
        default=None,
        help=f"GPUs training together (default: {DEFAULT_GPUS}, the paper's node)",
    )
    estimate.add_argument(
        "--mfu",
        type=float,
        default=None,
        help=f"the fraction of the peak the run reaches, in (0, 1] (default: {DEFAULT_MFU})",
    )
    estimate.add_argument(
        "--gpu-hour-price",
        type=float,
        default=None,
        metavar="P",
        help="price of one GPU-hour, for the cost (default: callbacks.glue_sweep.gpu_hour_price "
        "of the recipe, if set)",
    )
    check.set_defaults(handler=_run_check)


def _is_sweep(path: str) -> bool:
    """A GLUE sweep names a starting point; a pretraining recipe does not."""
    import yaml

    try:
        with open(path) as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return False  # the recipe loader reports it
    return isinstance(loaded, dict) and "starting_point" in loaded


def _sweep_problems(path: str, overrides: list[str]) -> list[str]:
    from mosaic_pretrain.glue.config import load_sweep
    from mosaic_pretrain.glue.sweep import check_sweep, sweep_lock

    try:
        config = load_sweep(path, overrides)
    except MosaicPretrainError as error:
        return error.problems
    return check_sweep(config) + _lock_problems(sweep_lock, config)


def _lock_problems(make_lock, config) -> list[str]:
    """Whether another live run holds the folder this one would lock (`check` takes no lock:
    `train` does, and runs the other checks after it)."""
    problems = Problems()
    lock = problems.attempt(make_lock, config)
    problem = lock.problem() if lock is not None else None
    return problems.found + ([problem] if problem else [])


def _warnings(path: str, overrides: list[str], world_size: int) -> list[str]:
    """What a recipe or sweep sets legally but surprisingly (empty where it does not load: its
    problems say why)."""
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.config.load import recipe_warnings
    from mosaic_pretrain.glue.config import load_sweep, sweep_warnings

    try:
        if _is_sweep(path):
            return sweep_warnings(load_sweep(path, overrides))
        return recipe_warnings(load_config(path, overrides, world_size))
    except MosaicPretrainError:
        return []


def check_file(
    path: str | Path, overrides: list[str] = (), world_size: int = 1, verify_hashes: bool = False
) -> list[str]:
    """Problems of the pretraining recipe at `path` (empty when it is ready to run); for an
    ablation recipe, first that every value makes a valid recipe. Last, whether another live
    run holds the folder it would lock (its save folder, an ablation's output folder)."""
    from mosaic_pretrain.ablation.runs import plan_runs
    from mosaic_pretrain.commands.check import check_recipe
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.config.folders import recipe_folder_lock

    try:
        config = load_config(path, overrides, world_size)
        if config.ablation is not None:
            plan_runs(Path(path), list(overrides))
    except MosaicPretrainError as error:
        return error.problems  # nothing else can be checked without valid recipes
    return check_recipe(config, verify_hashes) + _lock_problems(recipe_folder_lock, config)


def _run_check(args: argparse.Namespace) -> None:
    from composer.utils import dist

    from mosaic_pretrain.errors import ConfigError
    from mosaic_pretrain.train.estimate import EstimateOptions, estimate_report

    given = {
        "--gpu": args.gpu,
        "--gpus": args.gpus,
        "--mfu": args.mfu,
        "--gpu-hour-price": args.gpu_hour_price,
    }
    given = [name for name, value in given.items() if value is not None]
    if given and not args.estimate:
        verb = "needs" if len(given) == 1 else "need"
        raise ConfigError(f"{', '.join(given)} {verb} --estimate; add --estimate")
    unestimated = []  # why the estimate could not be made, reported with the check's problems
    if args.estimate:
        if _is_sweep(args.recipe):
            raise ConfigError(
                f"--estimate estimates a pretraining recipe; {args.recipe} is a GLUE sweep "
                "(estimate the recipe that pretrains its starting point)"
            )
        options = EstimateOptions.given(
            gpu=args.gpu, gpus=args.gpus, mfu=args.mfu, gpu_hour_price=args.gpu_hour_price
        )
        table, unestimated = estimate_report(
            args.recipe, args.overrides, options, dist.get_world_size()
        )
        print(table, flush=True)
    if _is_sweep(args.recipe):
        if args.verify_hashes:
            raise ConfigError(
                "--verify-hashes checks the MDS shards of a pretraining recipe; a GLUE sweep has "
                "none, drop the option"
            )
        problems = _sweep_problems(args.recipe, args.overrides)
    else:
        problems = check_file(
            args.recipe, args.overrides, dist.get_world_size(), verify_hashes=args.verify_hashes
        )
    problems += [line for line in unestimated if line.split(": ", 1)[1] not in problems]
    for warning in _warnings(args.recipe, args.overrides, dist.get_world_size()):
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        raise CheckFailed(f"{len(problems)} problem(s) in {args.recipe}")
    print(f"{args.recipe}: no problems found")


_COMMANDS = {
    "smoke": _add_smoke,
    "convert": _add_convert,
    "tokenizer": _add_tokenizer,
    "train": _add_train,
    "export": _add_export,
    "import": _add_import,
    "glue": _add_glue,
    "ablate": _add_ablate,
    "pareto": _add_pareto,
    "eval-lengths": _add_eval_lengths,
    "check": _add_check,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only `command`'s: some commands' options list choices that
    import torch, streaming or tokenizers, seconds that `train` should not spend before it can
    refuse a folder in use."""
    parser = argparse.ArgumentParser(
        prog="mosaic-pretrain", description="Fast pretraining of BERT-style encoders."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, add_command in _COMMANDS.items():
        if command in (None, name):
            add_command(subparsers)
    verbose = "show every library's INFO log lines (hidden by default; warnings always show)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    for command in subparsers.choices.values():  # after the command too; SUPPRESS keeps the first
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help=verbose)  # fmt: skip
    return parser


def configure_logging(verbose: bool) -> None:
    """Our INFO lines (the backend chosen, conversions, resumes) and every library's warnings;
    the libraries' INFO chatter (seeds, streaming's defaults) only with --verbose."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("mosaic_pretrain").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top level's options (-h, -v) take no value, so the first other word names the command.
    named = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(named if named in _COMMANDS else None).parse_args(argv)
    configure_logging(args.verbose)
    try:
        args.handler(args)
    except RunStopped as stopped:
        print(f"mosaic-pretrain {args.command}: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except MosaicPretrainError as error:
        print(f"mosaic-pretrain {args.command}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0
