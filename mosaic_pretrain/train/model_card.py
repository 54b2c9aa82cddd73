"""The model card (`README.md`) of an exported directory: how the weights were made (recipe,
what it was trained on and for how long, its last eval loss, the code version) and how to load
them, which a directory without our package installed needs told."""

from dataclasses import dataclass, field
from pathlib import Path

from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics

CARD = "README.md"
EVAL_LOSS = "metrics/eval/LanguageCrossEntropy"
EVAL_ACCURACY = "metrics/eval/MaskedAccuracy"


def model_shape(config) -> str:
    """A model config's sizes in words, for the card."""
    shape = (
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}"
    )
    activation = getattr(config, "ffn_activation", None) or getattr(config, "hidden_act", None)
    return f"{shape}, {activation}" if activation else shape


@dataclass
class ModelCard:
    title: str
    model_type: str  # mosaic_bert | bert
    parameters: int
    shape: str  # layers, widths, feed-forward
    tokenizer: str
    made_by: str  # how the weights came to be, one sentence
    code_version: str
    with_code: bool = False
    trained: dict[str, int] = field(default_factory=dict)  # batches, samples, tokens
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    started_from: str | None = None
    recipe_yaml: str | None = None

    def render(self) -> str:
        rows = [
            ("model", f"{self.model_type}, {self.parameters:,} parameters, {self.shape}"),
            ("tokenizer", self.tokenizer),
            ("made by", self.made_by),
        ]
        if self.trained:
            rows.append(("trained for", ", ".join(f"{v:,} {k}" for k, v in self.trained.items())))
        if self.started_from:
            rows.append(("started from", self.started_from))
        if self.eval_loss is not None:
            accuracy = (
                f", masked accuracy {self.eval_accuracy:.4f}"
                if self.eval_accuracy is not None
                else ""
            )
            rows.append(("last eval MLM loss", f"{self.eval_loss:.4f}{accuracy}"))
        rows.append(("code version", f"mosaic-pretrain {self.code_version}"))
        table = "\n".join(f"| {name} | {value} |" for name, value in rows)
        parts = [
            f"---\nlibrary_name: transformers\ntags: [fill-mask, {self.model_type}]\n---\n",
            f"# {self.title}\n",
            f"| | |\n|---|---|\n{table}\n",
            f"## Loading\n\n{self._loading()}\n",
        ]
        if self.recipe_yaml:
            parts.append(f"## Recipe\n\n```yaml\n{self.recipe_yaml.rstrip()}\n```\n")
        return "\n".join(parts)

    def _loading(self) -> str:
        if self.model_type != "mosaic_bert":
            return (
                "A transformers BERT:\n\n```python\nfrom transformers import "
                'AutoModelForMaskedLM\nmodel = AutoModelForMaskedLM.from_pretrained("DIR")\n```'
            )
        ours = (
            "With mosaic-pretrain installed (the code version above, or a later one), importing "
            "its model package registers MosaicBERT with transformers' Auto classes:\n\n"
            "```python\n"
            "import mosaic_pretrain.model  # noqa: F401\nfrom transformers import "
            'AutoModelForMaskedLM\nmodel = AutoModelForMaskedLM.from_pretrained("DIR")\n```\n\n'
        )
        if self.with_code:
            return ours + (
                "This directory also carries the model's code (`export --with-code`), so with "
                "only torch and transformers installed:\n\n```python\nfrom transformers import "
                'AutoModelForMaskedLM\nmodel = AutoModelForMaskedLM.from_pretrained("DIR", '
                "trust_remote_code=True)\n```"
            )
        return ours + (
            "Without that import transformers answers that it does not recognize the "
            "architecture `mosaic_bert`. To share the model with people who do not install "
            "mosaic-pretrain, export it with `mosaic-pretrain export CHECKPOINT DIR --with-code`, "
            "which adds the code for `trust_remote_code=True`."
        )


def last_eval(folder: Path, up_to_batch: int | None = None) -> tuple[float | None, float | None]:
    """The run's last logged eval loss and masked accuracy (at or before `up_to_batch`), read
    from its metrics file; (None, None) where it logged none."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return None, None
    series = read_metrics(path)

    def last(key: str) -> float | None:
        steps = [s for s in series.get(key, {}) if up_to_batch is None or s <= up_to_batch]
        return series[key][max(steps)] if steps else None

    return last(EVAL_LOSS), last(EVAL_ACCURACY)
