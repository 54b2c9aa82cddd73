"""Graphs, graph breaks and recompiles of a `torch.compile`d `mosaic-pretrain train` run, per
attention backend, on batches whose sizes change every step; writes JSON + markdown.

python scripts/compile_counts.py                          # inductor, sdpa eager flex (CPU: ~10 min)
python scripts/compile_counts.py --compile-backends aot_eager --batches 4
"""

import argparse
from pathlib import Path

from mosaic_pretrain.bench.compile_counts import run_compile_counts, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["sdpa", "eager", "flex"])
    parser.add_argument("--compile-backends", nargs="+", default=["inductor"])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--no-eval", action="store_true", help="train only, no evaluation")
    parser.add_argument("--data-folder", type=Path, default=Path("runs/benchmark-data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_counts"))
    args = parser.parse_args()
    record = run_compile_counts(
        tuple(args.backends),
        tuple(args.compile_backends),
        args.data_folder,
        batches=args.batches,
        with_eval=not args.no_eval,
    )
    _, markdown = write_results(record, args.out)
    print(markdown.read_text())


if __name__ == "__main__":
    main()
