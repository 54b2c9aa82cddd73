"""The GPU benchmark's code path, run tiny on CPU: it must produce a complete record."""

import json

from mosaic_pretrain.bench.attention_backends import run_attention_benchmark, write_results


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
