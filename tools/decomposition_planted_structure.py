"""Print the demo's planted-structure checks of the decomposition study from a finished demo run.

Usage (in the workflow directory, after `snakemake --cores 2 --configfile config/demo.yaml`):

    python tools/decomposition_planted_structure.py [results/decomposition/toy-clip]

Prints each head's TEXTSPAN texts grouped by kind (colour, shape or position, other) and whether each
check holds; exits 0 whatever the outcome (the README reports what holds).
"""

import argparse
from pathlib import Path

import pandas as pd

from clip_interp.demo.decomposition_sets import head_kinds, planted_structure_checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="results/decomposition/toy-clip", type=Path)
    args = parser.parse_args(argv)
    textspan = pd.read_parquet(args.folder / "textspan.parquet")
    pd.set_option("display.width", 200)
    print("TEXTSPAN heads (summed variance share of their texts by kind):")
    print(head_kinds(textspan).round(3).to_string(index=False))
    checks = planted_structure_checks(textspan, pd.read_parquet(args.folder / "segmentation.parquet"),
                                      pd.read_parquet(args.folder / "waterbirds.parquet"))
    for row in checks.itertuples():
        print(f"{'HOLDS' if row.holds else 'DOES NOT HOLD'}: {row.check} ({row.evidence})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
