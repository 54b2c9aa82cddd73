"""Measure how many tokens per second one CPU process feeds to training, per data path.

python scripts/bench_data.py --out benchmarks/results/data_pipeline
"""

import argparse
import json
from pathlib import Path

from mosaic_pretrain.bench.data_pipeline import results_markdown, run_data_benchmark


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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    markdown = results_markdown(record)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
