"""Rewrite README.md's table of valid values from the schemas' rules (run after changing one)."""

from pathlib import Path

from mosaic_pretrain.commands.valid_values import replace_table

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    README.write_text(replace_table(README.read_text()))
    print(f"{README}: table of valid values written")


if __name__ == "__main__":
    main()
