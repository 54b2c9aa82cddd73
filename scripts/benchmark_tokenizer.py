"""Measure how fast `mosaic-pretrain tokenizer` trains each kind on the shipped corpus.

python scripts/benchmark_tokenizer.py --out benchmarks/results/tokenizer_training
"""

import argparse
from pathlib import Path

from mosaic_pretrain.bench.records import write_record
from mosaic_pretrain.bench.tokenizer_training import results_markdown, run_tokenizer_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=30528)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tokenizer_training"))
    args = parser.parse_args()
    record = run_tokenizer_benchmark(args.vocab_size)
    markdown = results_markdown(record)
    write_record(record, args.out, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
