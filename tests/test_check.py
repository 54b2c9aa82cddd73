"""`mosaic-pretrain check`: each bad input found before compute is spent, one line each, exit 2."""

import json
import os
import shutil
from pathlib import Path

import pytest
import xxhash

from mosaic_pretrain.cli import check_file, main
from mosaic_pretrain.data.convert import ConvertOptions, convert

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("check") / "corpus"
    options = ConvertOptions(max_documents=40, val_fraction=0.2, compression="none")
    convert(options, folder, progress=False, log=lambda line: None)
    return folder


def recipe(data: Path, tmp_path: Path, *overrides: str) -> list[str]:
    return [
        f"data_local={data}",
        "train_loader.dataset.convert_builtin_corpus=false",
        "eval_loader.dataset.convert_builtin_corpus=false",
        f"save_folder={tmp_path}/ckpt",
        f"export_folder={tmp_path}/hf",
        *overrides,
    ]


def problems(data, tmp_path, *overrides):
    return check_file(SMOKE, recipe(data, tmp_path, *overrides))


def copy_data(data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy


def test_a_good_recipe_has_no_problems_and_the_command_says_so(data, tmp_path, capsys):
    assert problems(data, tmp_path) == []
    assert main(["check", str(SMOKE), *recipe(data, tmp_path)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_recipe_errors_are_one_line_each(data, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\nmodel: [unclosed\n")
    assert problems(data, tmp_path) == []
    [yaml_problem] = check_file(bad)
    assert yaml_problem.startswith(f"recipe {bad} is not valid YAML at line 3, column 1")
    [unknown] = problems(data, tmp_path, "optimizer.lrr=1")
    assert "unknown key 'optimizer.lrr'" in unknown
    [wrong_type] = problems(data, tmp_path, "max_seq_len=long")
    assert "max_seq_len" in wrong_type
    both = problems(data, tmp_path, "optimizer.lr=-1", "mlm_probability=2")
    assert sorted(both) == [
        "mlm_probability=2 is out of range: it must be in (0, 1)",
        "optimizer.lr=-1 is out of range: it must be in (0, 1] (an Adam step moves each weight "
        "by about lr)",
    ]
    assert main(["check", str(SMOKE), *recipe(data, tmp_path, "optimizer.lr=-1")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "problem: optimizer.lr=-1 is out of range: it must be in (0, 1] (an Adam step moves "
        "each weight by about lr)",
        f"mosaic-pretrain check: error: 1 problem(s) in {SMOKE}",
    ]


def test_data_problems(data, tmp_path):
    [missing] = problems(data, tmp_path, f"train_loader.dataset.local={tmp_path}/nowhere")
    assert f"no MDS index at {tmp_path}/nowhere/train/index.json" in missing

    copy = copy_data(data, tmp_path)
    index = copy / "train" / "index.json"
    record = json.loads(index.read_text())
    shard = copy / "train" / record["shards"][0]["raw_data"]["basename"]
    shard.write_bytes(shard.read_bytes()[:100])
    [truncated] = problems(copy, tmp_path)
    assert "is truncated or corrupt" in truncated and shard.name in truncated
    shard.unlink()
    assert "is missing" in problems(copy, tmp_path)[0]
    index.write_text(json.dumps({**record, "shards": []}))
    assert "lists no shards" in problems(copy, tmp_path)[0]
    index.write_text("{not json")
    assert "is corrupt (JSONDecodeError)" in problems(copy, tmp_path)[0]


def test_tokenizer_and_vocabulary_problems(data, tmp_path):
    [tokenizer] = problems(data, tmp_path, f"tokenizer_name={tmp_path}/no-tokenizer-here")
    assert "no-tokenizer-here" in tokenizer and "does not exist; fix the path" in tokenizer
    [vocab] = problems(data, tmp_path, "model.model_config.vocab_size=1024")
    assert "vocab_size=1024 is smaller than tokenizer 'bert-base-uncased' (30522" in vocab


def test_save_folder_problems(data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    [save] = problems(data, tmp_path, f"save_folder={blocker}/ckpt")
    assert f"{blocker} is a file" in save
    (tmp_path / "hf").mkdir()
    [export] = problems(data, tmp_path)
    assert "export_folder" in export and "already exists" in export


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_save_folder(data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    [save] = problems(data, tmp_path, f"save_folder={locked}/ckpt")
    assert "is not writable" in save


def test_checkpoint_problems(data, tmp_path):
    from mosaic_pretrain.commands.train import train
    from mosaic_pretrain.config import load_config

    quick = [
        "model.model_config.num_hidden_layers=1",
        "global_train_batch_size=8",
        "device_train_microbatch_size=8",
        "max_duration=1ba",
        "eval_loader=null",
        "save_interval=1ba",
        "log_to_console=false",
        "export_folder=null",
    ]
    trainer = train(load_config(SMOKE, recipe(data, tmp_path / "first", *quick)))
    trainer.close()
    checkpoint = tmp_path / "first" / "ckpt" / "ep0-ba1-rank0.pt"
    later = [*quick, f"load_path={checkpoint}", "max_duration=2ba"]
    assert problems(data, tmp_path, *later) == []

    other_model = problems(data, tmp_path, *later, "model.model_config.num_hidden_layers=2")
    assert other_model == [
        f"cannot resume {checkpoint} with a different "
        "model.model_config.num_hidden_layers: the weights or data would not "
        "fit; start a new run (load_path + a new save_folder) instead"
    ]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:4096])
    [cut] = problems(data, tmp_path, *quick, f"load_path={truncated}")
    assert f"load_path: checkpoint {truncated} is truncated" in cut
    [absent] = problems(data, tmp_path, *quick, f"load_path={tmp_path}/none.pt")
    assert "does not exist" in absent


def flip_one_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def verify(data: Path, tmp_path: Path, capsys) -> tuple[int, list[str]]:
    code = main(["check", str(SMOKE), *recipe(data, tmp_path), "--verify-hashes"])
    return code, [line for line in capsys.readouterr().err.splitlines() if "problem:" in line]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_verify_hashes_finds_a_shard_corrupted_at_its_size(data, tmp_path, capsys, compression):
    if compression == "none":
        copy = copy_data(data, tmp_path)
    else:
        copy = tmp_path / "zstd"
        options = ConvertOptions(max_documents=40, val_fraction=0.2, compression="zstd")
        convert(options, copy, progress=False, log=lambda line: None)
    assert verify(copy, tmp_path, capsys) == (0, [])

    [shard] = json.loads((copy / "train" / "index.json").read_text())["shards"]
    stored = shard["zip_data"] or shard["raw_data"]
    path = copy / "train" / stored["basename"]
    flip_one_byte(path)
    assert path.stat().st_size == stored["bytes"]
    assert problems(copy, tmp_path) == []  # by default, sizes only
    code, found = verify(copy, tmp_path, capsys)
    assert code == 2
    expected = stored["hashes"]["xxh64"]
    assert found == [
        f"problem: MDS shard {path} is corrupt: its xxh64 hash is "
        f"{xxhash.xxh64(path.read_bytes()).hexdigest()}, its index says {expected}; convert the "
        "data again or download it again"
    ]


def test_verify_hashes_says_when_an_index_has_no_hashes(data, tmp_path, capsys):
    copy = copy_data(data, tmp_path)
    index = copy / "val" / "index.json"
    record = json.loads(index.read_text())
    for shard in record["shards"]:
        shard["raw_data"].pop("hashes")
    index.write_text(json.dumps(record))
    code, found = verify(copy, tmp_path, capsys)
    assert code == 2 and len(found) == 1
    assert (
        f"MDS index {index} records no hash this installation can compute for 1 shard" in found[0]
    )
    assert "convert the data again with mosaic-pretrain convert" in found[0]


def test_verify_hashes_is_for_pretraining_recipes(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("run_name: s\nstarting_point: x.pt\n")
    assert main(["check", str(sweep), "--verify-hashes"]) == 2
    assert "a GLUE sweep has none" in capsys.readouterr().err


def pretend_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def test_a_precision_or_backend_this_device_cannot_run_is_one_line_each(
    data, tmp_path, monkeypatch, capsys
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    [bf16] = problems(data, tmp_path, "precision=amp_bf16")  # the schema's default
    assert bf16 == (
        "precision=amp_bf16 needs a CUDA GPU and torch sees none (on the CPU, Composer trains "
        "in fp32 only); set precision=fp32"
    )
    [flash] = problems(data, tmp_path, "model.model_config.attention_backend=flash_attn")
    assert flash.startswith("model.model_config.attention_backend=flash_attn needs a CUDA GPU")
    assert main(["check", str(SMOKE), *recipe(data, tmp_path, "precision=amp_fp16")]) == 2
    assert "problem: precision=amp_fp16 needs a CUDA GPU" in capsys.readouterr().err

    pretend_gpu(monkeypatch, "Tesla V100-SXM2-16GB", (7, 0))
    [old_gpu] = problems(data, tmp_path, "precision=amp_bf16")
    assert old_gpu.startswith("precision=amp_bf16: Tesla V100-SXM2-16GB (compute capability 7.0)")
    assert problems(data, tmp_path, "precision=amp_fp16") == []

    pretend_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0))
    assert problems(data, tmp_path, "precision=amp_bf16") == []
    [fp32_flash] = problems(
        data, tmp_path, "precision=fp32", "model.model_config.attention_backend=flash_attn"
    )
    assert "needs precision amp_bf16 or amp_fp16" in fp32_flash


def test_a_surprising_value_is_a_warning_and_the_check_still_passes(data, tmp_path, capsys):
    overrides = recipe(data, tmp_path, "save_num_checkpoints_to_keep=0", "eval_interval=90ba")
    assert main(["check", str(SMOKE), *overrides]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "warning: save_num_checkpoints_to_keep=0: no checkpoint is kept in save_folder, so the "
        "run cannot be continued",
        "warning: eval_interval=90ba is longer than max_duration=60ba: the model is evaluated "
        "only at the end of training",
    ]
    assert "no problems found" in captured.out
