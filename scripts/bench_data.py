"""Measure how many tokens per second one CPU process feeds to training, per data path.

python scripts/bench_data.py --out benchmarks/results/data_pipeline
"""

import argparse
from pathlib import Path

from mosaic_pretrain.bench.data_pipeline import results_markdown, run_data_benchmark
from mosaic_pretrain.bench.result_files import write_result_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data_pipeline"))
    args = parser.parse_args()
    record = run_data_benchmark(
        args.batch_size, args.max_seq_len, args.batches, repeats=args.repeats
    )
    markdown = results_markdown(record)
    write_result_files(args.out, record, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
