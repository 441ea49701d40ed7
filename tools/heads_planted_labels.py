"""The demo's head labels against the planted structure of the synthetic world.

Every text of the demo's description pool names one planted kind (colour, shape, position, size, background) or
none ("general"; clip_interp.demo.decomposition_sets.description_kind), and the demo taxonomy has one property per
kind. A head's planted property is the kind most of its judged TEXTSPAN texts name (general texts left out; ties
to the kind of the earlier text; none when all are general). Prints, per head, the label the workflow gave, the
planted property and the kinds of its texts, then the share of heads with a planted property whose label equals it.

    python3 tools/heads_planted_labels.py results/heads/toy-clip/labels_taxonomy.parquet
"""

from __future__ import annotations

import argparse

import pandas as pd

from clip_interp.demo.decomposition_sets import planted_label_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("labels", help="a label table of the demo (labels_taxonomy.parquet)")
    args = parser.parse_args()
    table = planted_label_check(pd.read_parquet(args.labels))
    print(table.to_string(index=False))
    judged = table[table["planted"].notna()]
    print(f"\n{int(judged['matches'].sum())} of {len(judged)} heads with a planted property carry it as their label "
          f"({judged['matches'].mean():.3f}); {len(table) - len(judged)} heads have only general texts")


if __name__ == "__main__":
    main()
