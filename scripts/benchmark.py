"""Training-step speed: MosaicBERT (each attention backend, eager and compiled) beside the Hugging
Face BERT baseline on the same batches, plus the end-to-end `train` path; writes JSON + markdown.

python scripts/benchmark.py --device cuda            # the full GPU benchmark
python scripts/benchmark.py --device cpu --preset mini --microbatch 8 --steps 3 --no-compile
"""

import argparse
from pathlib import Path

from mosaic_pretrain.bench.step_results import write_results
from mosaic_pretrain.bench.training_step import BenchmarkPlan, run_benchmark


def main() -> None:
    plan = BenchmarkPlan()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=plan.device)
    parser.add_argument("--preset", default=plan.preset)
    parser.add_argument("--seq-len", type=int, default=plan.seq_len)
    parser.add_argument("--microbatch", type=int, default=plan.microbatch)
    parser.add_argument("--steps", type=int, default=plan.steps)
    parser.add_argument("--warmup", type=int, default=plan.warmup)
    parser.add_argument("--models", nargs="+", default=list(plan.models))
    parser.add_argument("--backends", nargs="+", default=list(plan.backends))
    parser.add_argument("--no-compile", action="store_true", help="eager models only")
    parser.add_argument("--compile-backend", default=plan.compile_backend)
    parser.add_argument(
        "--compare-inline-layout",
        action="store_true",
        help="also time MosaicBERT finding its tokens inside the step (host-device syncs)",
    )
    parser.add_argument("--no-largest-microbatch", action="store_true")
    parser.add_argument(
        "--largest-microbatch-limit", type=int, default=plan.largest_microbatch_limit
    )
    parser.add_argument("--end-to-end-batches", type=int, default=plan.end_to_end_batches)
    parser.add_argument("--end-to-end-workers", type=int, default=plan.end_to_end_workers)
    parser.add_argument("--rows", choices=("paragraphs", "documents"), default=plan.rows)
    parser.add_argument("--data-folder", default=plan.data_folder)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_step"))
    args = parser.parse_args()
    record = run_benchmark(
        BenchmarkPlan(
            device=args.device,
            preset=args.preset,
            seq_len=args.seq_len,
            microbatch=args.microbatch,
            steps=args.steps,
            warmup=args.warmup,
            models=tuple(args.models),
            backends=tuple(args.backends),
            compiled=(False,) if args.no_compile else (False, True),
            compile_backend=args.compile_backend,
            compare_inline_layout=args.compare_inline_layout,
            find_largest_microbatch=not args.no_largest_microbatch,
            largest_microbatch_limit=args.largest_microbatch_limit,
            end_to_end_batches=args.end_to_end_batches,
            end_to_end_workers=args.end_to_end_workers,
            rows=args.rows,
            data_folder=args.data_folder,
        )
    )
    _, markdown = write_results(record, args.out)
    print(markdown.read_text())


if __name__ == "__main__":
    main()
