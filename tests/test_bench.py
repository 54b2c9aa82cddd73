"""The GPU benchmark's code path, run tiny on CPU: it must produce a complete record."""

import json

from mosaic_pretrain.bench.attention_backends import run_attention_benchmark, write_results

# The rows of training_step.{json,md}, as the benchmark and the GPU check write them.
REQUIRED_ROW_KEYS = {
    "model",
    "backend",
    "compiled",
    "microbatch",
    "step_ms",
    "tokens_per_s",
    "mfu",
    "peak_mem_gib",
    "status",
}


def test_attention_benchmark_writes_json_and_markdown(tmp_path):
    record = run_attention_benchmark(
        preset="mini",
        microbatch=2,
        seq_len=16,
        steps=1,
        warmup=0,
        device="cpu",
        backends=["eager", "sdpa", "flash_attn"],
        config_overrides=dict(num_hidden_layers=1, vocab_size=2048),
    )
    write_results(record, tmp_path / "r.json", tmp_path / "r.md")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert {"device", "torch", "date", "results"} <= saved.keys()
    by_backend = {row["backend"]: row for row in saved["results"]}
    assert by_backend["eager"]["max_abs_logit_diff_vs_eager_fp32"] == 0.0
    assert by_backend["sdpa"]["status"] == "ok"
    assert by_backend["sdpa"]["max_abs_logit_diff_vs_eager_fp32"] < 1e-4
    assert by_backend["sdpa"]["real_tokens"] > 0
    assert "| sdpa |" in (tmp_path / "r.md").read_text()


def test_data_benchmark_measures_every_path():
    from mosaic_pretrain.bench.data_pipeline import results_markdown, run_data_benchmark

    record = run_data_benchmark(batch_size=8, max_seq_len=64, batches=2, repeats=1)
    paths = {row["path"]: row for row in record["results"]}
    assert set(paths) == {"pretokenized", "text", "hf_collator", "our_collator"}
    assert all(row["tokens_per_s"] > 0 for row in paths.values())
    # the same samples reach every path
    assert len({row["real_tokens"] for row in paths.values()}) == 1
    assert "| pretokenized |" in results_markdown(record)


def test_training_step_benchmark_runs_every_configuration_and_the_trainer_path(tmp_path):
    from mosaic_pretrain.bench.step_results import write_results
    from mosaic_pretrain.bench.training_step import BenchmarkPlan, run_benchmark

    plan = BenchmarkPlan(
        device="cpu",
        preset="mini",
        seq_len=32,
        microbatch=4,
        steps=2,
        warmup=1,
        batches=3,
        backends=("sdpa", "flash_attn"),
        compiled=(False, True),
        compile_backend="eager",  # the compile path without minutes of inductor on a CPU
        compare_inline_layout=True,
        end_to_end_batches=4,
        end_to_end_workers=0,
        data_folder=str(tmp_path / "data"),
        max_documents=3000,
        model_overrides={"num_hidden_layers": 1},
    )
    record = run_benchmark(plan)
    json_path, markdown_path = write_results(record, tmp_path / "results" / "training_step")
    saved = json.loads(json_path.read_text())
    assert {"device", "torch", "date", "results"} <= saved.keys()
    layouts = {(r["model"], r["backend"], r["compiled"], r["layout"]) for r in saved["results"]}
    assert layouts == {
        (model, backend, compiled, layout)
        for model, backends, layouts in (
            ("mosaic_bert", ("sdpa", "flash_attn"), ("host", "inline")),
            ("hf_bert", ("sdpa",), ("n/a",)),
        )
        for backend in backends
        for compiled in (False, True)
        for layout in layouts
    }
    inline = [r for r in saved["results"] if r["layout"] == "inline" and r["status"] == "ok"]
    assert len(inline) == 2 and all(r["tokens_per_s"] > 0 for r in inline)
    rows = {
        (r["model"], r["backend"], r["compiled"]): r
        for r in saved["results"]
        if r["layout"] != "inline"
    }
    assert all(row.keys() >= REQUIRED_ROW_KEYS for row in saved["results"])
    assert rows[("mosaic_bert", "flash_attn", False)]["status"].startswith("skipped")
    for key in (("mosaic_bert", "sdpa", False), ("hf_bert", "sdpa", True)):
        row = rows[key]
        assert row["status"] == "ok" and row["tokens_per_s"] > 0 and row["step_ms"] > 0
        assert 0 < row["mfu_vs_matmul_ceiling"] < 5 and row["mfu"] is None  # no CPU spec peak
    # Realistic padding: paragraphs leave many rows short, and 30% of real tokens are masked.
    assert 0.2 < saved["fill"] < 0.95
    assert abs(saved["masked_fraction_of_real_tokens"] - 0.3) < 0.05
    # The same real tokens reach both models.
    assert (
        rows[("mosaic_bert", "sdpa", False)]["real_tokens_per_step"]
        == (rows[("hf_bert", "sdpa", False)]["real_tokens_per_step"])
    )
    assert saved["end_to_end"]["tokens_per_s"] > 0 and saved["end_to_end"]["ratio_to_bare_step"] > 0
    assert "| hf_bert | sdpa | True | n/a |" in markdown_path.read_text()
    assert "| mosaic_bert | sdpa | False | inline |" in markdown_path.read_text()


def test_mfu_counts_the_work_a_step_must_do():
    """The harness's MFU numerator is training_flops on the real batch: checked by hand for a
    one-layer model on two documents."""
    import torch

    from mosaic_pretrain.model import MosaicBertConfig
    from mosaic_pretrain.train.flops import training_flops

    config = MosaicBertConfig(
        vocab_size=64,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, 5, -100, -100], [7, -100, -100, -100]]),
    }
    tokens, pairs, masked, h, i, v = 5, 3 * 3 + 2 * 2, 2, 8, 16, 64
    forward = tokens * (8 * h * h + 6 * h * i) + 4 * h * pairs + masked * (2 * h * h + 2 * h * v)
    assert training_flops(config, batch) == 3 * forward


def test_tokenizer_benchmark_measures_every_kind():
    from mosaic_pretrain.bench.tokenizer_training import (
        results_markdown,
        run_tokenizer_benchmark,
    )

    record = run_tokenizer_benchmark(vocab_size=512, max_documents=60)
    rows = {row["kind"]: row for row in record["results"]}
    assert set(rows) == {"wordpiece", "bpe", "unigram"}
    assert all(row["documents"] == 60 and row["documents_per_s"] > 0 for row in rows.values())
    assert all(row["megabytes_per_s"] > 0 and row["vocabulary"] == 512 for row in rows.values())
    assert "| unigram |" in results_markdown(record)
