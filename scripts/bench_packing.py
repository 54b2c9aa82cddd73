"""Measure how full batch rows are at 128, 512 and 1024 tokens, padded and packed.

python scripts/bench_packing.py --out benchmarks/results/packing_fill
"""

import argparse
from pathlib import Path

from mosaic_pretrain.bench.packing_fill import results_markdown, run_packing_fill
from mosaic_pretrain.bench.result_files import write_result_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="128,512,1024")
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/packing_fill"))
    args = parser.parse_args()
    record = run_packing_fill(
        tuple(int(n) for n in args.lengths.split(",")),
        tuple(int(n) for n in args.batch_sizes.split(",")),
    )
    markdown = results_markdown(record)
    write_result_files(args.out, record, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
