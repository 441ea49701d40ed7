"""The demo's head labels against the planted structure of the synthetic world.

Every text of the demo's description pool names one planted kind (colour, shape, position, size, background) or
none ("general"; clip_interp.synthetic_decomposition.description_kind), and the demo taxonomy has one property per
kind. A head's planted property is the kind most of its judged TEXTSPAN texts name (general texts left out; ties
to the kind of the earlier text; none when all are general). Prints, per head, the label the workflow gave, the
planted property and the kinds of its texts, then the share of heads with a planted property whose label equals it.

    python3 tools/heads_planted_labels.py results/heads/toy-clip/labels_taxonomy.parquet
"""

from __future__ import annotations

import argparse
from collections import Counter

import pandas as pd

from clip_interp.synthetic_decomposition import description_kind

PROPERTY_OF_KIND = {"colour": "colours", "shape": "shapes", "position": "positions", "size": "sizes",
                    "background": "backgrounds"}


def planted_property(texts) -> str | None:
    """The demo taxonomy's property named by most of ``texts`` (general texts ignored; ties: the earlier)."""
    kinds = [PROPERTY_OF_KIND[k] for k in map(description_kind, texts) if k in PROPERTY_OF_KIND]
    if not kinds:
        return None
    counts = Counter(kinds)
    best = max(counts.values())
    return next(k for k in kinds if counts[k] == best)


def planted_check(labels: pd.DataFrame) -> pd.DataFrame:
    """Per head: ``layer, head, label, planted, matches, kinds``."""
    rows = []
    for row in labels.itertuples():
        planted = planted_property(list(row.texts))
        rows.append({"layer": row.layer, "head": row.head, "label": row.label, "planted": planted,
                     "matches": planted is not None and planted == row.label,
                     "kinds": ", ".join(description_kind(t) for t in row.texts)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("labels", help="a label table of the demo (labels_taxonomy.parquet)")
    args = parser.parse_args()
    table = planted_check(pd.read_parquet(args.labels))
    print(table.to_string(index=False))
    judged = table[table["planted"].notna()]
    print(f"\n{int(judged['matches'].sum())} of {len(judged)} heads with a planted property carry it as their label "
          f"({judged['matches'].mean():.3f}); {len(table) - len(judged)} heads have only general texts")


if __name__ == "__main__":
    main()
