"""`export --with-code`: a MosaicBERT directory that transformers alone loads with
trust_remote_code=True, and the default export, which carries no code."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers.dynamic_module_utils import get_imports

from mosaic_pretrain.errors import CheckpointError
from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.train.export import save_hf_directory
from mosaic_pretrain.train.model_code import AUTO_MAP, model_files
from tests.conftest import make_tiny_config

LOADER = Path(__file__).with_name("clean_env_loader.py")
STANDARD_LIBRARY = set(sys.stdlib_module_names)


def load_without_our_package(directory: Path, ids: torch.Tensor, tmp_path: Path):
    """The logits a process without mosaic_pretrain gets from `directory`, and its output."""
    out = tmp_path / "logits.pt"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-I", str(LOADER), str(directory), json.dumps(ids.tolist()), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out), done.stdout


def test_the_copied_code_imports_only_torch_transformers_and_itself(tmp_path):
    for name, source in model_files().items():
        tree = ast.parse(source)  # still Python
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("mosaic_pretrain"), (name, node.module)
        (tmp_path / name).write_text(source)
        # what transformers requires installed before it runs remote code (flash-attn is not)
        required = set(get_imports(tmp_path / name)) - STANDARD_LIBRARY
        assert required <= {"torch", "transformers"}, (name, required)


def test_a_with_code_export_loads_where_mosaic_pretrain_is_not_installed(tmp_path, bert_tokenizer):
    torch.manual_seed(0)
    model = MosaicBertForMaskedLM(make_tiny_config(attention_backend="sdpa")).eval()
    directory = save_hf_directory(model, bert_tokenizer, tmp_path / "shared", with_code=True)
    saved = json.loads((directory / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP
    assert saved["attention_backend"] == "auto"  # the trained-with kernel may not exist there
    ids = torch.randint(1, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    logits, printed = load_without_our_package(directory, ids, tmp_path)
    assert printed.startswith("transformers_modules.")  # the directory's code, not ours
    assert "MosaicBertForSequenceClassification" in printed
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_the_default_export_carries_no_code(tmp_path, bert_tokenizer):
    model = MosaicBertForMaskedLM(make_tiny_config()).eval()
    directory = save_hf_directory(model, bert_tokenizer, tmp_path / "plain")
    assert not list(directory.glob("*.py"))
    assert "auto_map" not in json.loads((directory / "config.json").read_text())


def test_with_code_is_refused_for_a_bert(tmp_path, bert_tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    )
    with pytest.raises(CheckpointError, match="transformers loads without it"):
        save_hf_directory(bert, bert_tokenizer, tmp_path / "bert", with_code=True)
    assert not (tmp_path / "bert").exists()


def test_a_bert_recipe_cannot_ask_for_code_in_its_export():
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.errors import ConfigError

    smoke = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
    overrides = ["model.name=hf_bert", "model.model_config.attention_backend=null"]
    with pytest.raises(ConfigError, match="export_with_code applies to mosaic_bert only"):
        load_config(smoke, [*overrides, "export_with_code=true"])
