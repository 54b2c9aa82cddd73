"""Time MosaicBERT forward+backward per attention backend on a GPU and write the results.

python scripts/benchmark_attention.py --device cuda --out benchmarks/results/attention_backends
"""

import argparse
from pathlib import Path

from mosaic_pretrain.bench.attention_backends import run_attention_benchmark, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--microbatch", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backends", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention_backends"))
    args = parser.parse_args()
    record = run_attention_benchmark(
        args.preset,
        args.microbatch,
        args.seq_len,
        args.steps,
        args.warmup,
        args.device,
        args.backends,
    )
    write_results(record, args.out.with_suffix(".json"), args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
