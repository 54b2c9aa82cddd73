import subprocess
import sys

import pytest
import torch

from mosaic_pretrain.cli import main
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.smoke import run_smoke, synthetic_mlm_batch


def test_smoke_trains_and_reports(capsys):
    assert main(["smoke", "--steps", "6", "--batch-size", "4", "--seq-len", "32"]) == 0
    out = capsys.readouterr().out
    assert "OK: attention backend sdpa" in out


def test_smoke_loss_falls_with_every_cpu_backend():
    for backend in ("eager", "sdpa", "flex"):
        result = run_smoke(
            steps=4, batch_size=2, seq_len=16, attention_backend=backend, log=lambda line: None
        )
        assert result.backend == backend
        assert result.last_loss < result.first_loss


def test_smoke_rejects_too_few_steps():
    with pytest.raises(ConfigError, match="steps must be at least 2"):
        run_smoke(steps=1)


def test_synthetic_batch_masks_only_real_tokens():
    batch = synthetic_mlm_batch(8, 32, 30528, 0.3, seed=1)
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == -100).all()
    assert (batch["input_ids"][padding] == 0).all()
    masked = batch["labels"] != -100
    assert (batch["input_ids"][masked] == 103).all()
    fraction = masked.sum() / batch["attention_mask"].sum()
    assert 0.2 < fraction < 0.4


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_user_error_is_one_line_with_exit_code_2(capsys):
    assert main(["smoke", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mosaic-pretrain smoke: error: device='cuda' but torch sees no CUDA")


def test_console_script_is_installed():
    done = subprocess.run(
        [sys.executable, "-m", "mosaic_pretrain", "smoke", "--attention-backend", "nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "train", "configs/pretrain/smoke.yaml", "max_duration=2ba"],
        ["check", "configs/pretrain/smoke.yaml", "--estimate", "--gpu", "h100"],
        ["convert", "--source", "a.txt", "--out", "shards", "--compression", "gzip"],
        ["smoke", "--preset", "mini", "-v"],
    ],
)
def test_a_named_command_parses_as_with_every_command_built(argv):
    """`main` builds only the named command's parser (the others' options import torch); what
    it parses must be what the whole parser parses."""
    from mosaic_pretrain.cli import _COMMANDS, build_parser

    command = next(word for word in argv if not word.startswith("-"))
    only = build_parser(command)
    assert set(only._subparsers._group_actions[0].choices) == {command}
    assert vars(only.parse_args(argv)) == vars(build_parser().parse_args(argv))
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(_COMMANDS)


def test_a_misspelt_command_lists_every_command(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["trian", "configs/pretrain/smoke.yaml"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'trian'" in error and "'eval-lengths'" in error and "'train'" in error
