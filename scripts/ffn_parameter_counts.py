"""Print the README's table of feed-forward variants and their parameter counts at a preset."""

import argparse

from mosaic_pretrain.ablation.parameters import parameter_counts, render_parameter_table
from mosaic_pretrain.model.configuration import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="base")
    print(render_parameter_table(parameter_counts(parser.parse_args().preset)))


if __name__ == "__main__":
    main()
