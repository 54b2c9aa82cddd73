"""Parameter counts of every feed-forward variant at a preset's size, matched and not, for the
README's table (a test keeps the two equal)."""

import torch

from mosaic_pretrain.model.activations import FFN_ACTIVATIONS


def parameter_counts(preset: str = "base") -> list[dict]:
    """One row per variant: its activation width and whole-model (MLM) parameter count, with
    the GLU width as given and parameter-matched. Built on the meta device: no memory, no init."""
    from mosaic_pretrain.model import MosaicBertConfig, MosaicBertForMaskedLM

    rows = []
    for name, spec in FFN_ACTIVATIONS.items():
        row = {"ffn_activation": name, "gated": spec.gated, "expanded": spec.expanded}
        for matched in (False, True):
            config = MosaicBertConfig.from_preset(
                preset, ffn_activation=name, ffn_param_matched=matched
            )
            with torch.device("meta"):
                model = MosaicBertForMaskedLM(config)
            suffix = "matched" if matched else "unmatched"
            row[f"width_{suffix}"] = config.feed_forward_width
            row[f"parameters_{suffix}"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    return rows


def render_parameter_table(rows: list[dict]) -> str:
    lines = [
        "| `ffn_activation` | form | width | parameters | width, matched | parameters, matched |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        form = ("GLU" if row["gated"] else "plain") + (", expanded" if row["expanded"] else "")
        lines.append(
            f"| `{row['ffn_activation']}` | {form} | {row['width_unmatched']} | "
            f"{row['parameters_unmatched']:,} | {row['width_matched']} | "
            f"{row['parameters_matched']:,} |"
        )
    return "\n".join(lines)
