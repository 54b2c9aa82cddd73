"""`mosaic-pretrain`: the command line. User errors print one line and exit with code 2."""

import argparse
import logging
import sys

from mosaic_pretrain.errors import MosaicPretrainError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mosaic-pretrain", description="Fast pretraining of BERT-style encoders."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_smoke(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except MosaicPretrainError as error:
        print(f"mosaic-pretrain {args.command}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0
