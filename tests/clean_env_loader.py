"""Loads an exported directory the way someone without mosaic_pretrain would: run as a script
in a subprocess, with our package made unimportable. Saves the masked-LM logits of the ids given.

    python -I tests/clean_env_loader.py DIR IDS_JSON OUT.pt
"""

import json
import sys

sys.modules["mosaic_pretrain"] = None  # an import of it now fails, as where it is not installed

import torch  # noqa: E402
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification  # noqa: E402


def main(directory: str, ids_json: str, out: str) -> None:
    model = AutoModelForMaskedLM.from_pretrained(directory, trust_remote_code=True).eval()
    ids = torch.tensor(json.loads(ids_json))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.save(logits, out)
    classifier = AutoModelForSequenceClassification.from_pretrained(
        directory, trust_remote_code=True, num_labels=3
    )
    print(type(model).__module__, type(classifier).__name__)


if __name__ == "__main__":
    main(*sys.argv[1:])
