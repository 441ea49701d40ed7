"""Recompute random entries of a finished run's tables with one full hooked forward each, and compare.

Checks, for randomly drawn instances of a model's results: the classification score d
(``scores.parquet``), d* (so CTE = d*/d) at (0, negator), (L, EOT) and two random (layer,
position) cells (``causal_tracing.parquet``), a(l, h) of every head at three layers (``selectivity.parquet``)
and IAE at three (layer, component) cells (``image_ablation.parquet``). Every value is
recomputed from the image file and the sentences alone, without the caches or the engine.

Usage: python tools/spot_check_results.py --configfile config/config.yaml --model openai-ViT-B-32
(run in the workflow's directory after `snakemake`). Exits 1 when a difference exceeds --tol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from clip_interp.images import load_images
from clip_interp.models import load_model, patch_positions
from clip_interp.negation.caches import single_colour
from clip_interp.negation.labels import COMPONENTS


def similarity_pair(model, image_emb, caption_emb, foil_emb) -> tuple[float, float]:
    return model.similarity(image_emb, caption_emb).item(), model.similarity(image_emb, foil_emb).item()


@torch.inference_mode()
def check_instance(model, row, pixels, tables, variants, rng) -> dict[str, float]:
    """Largest absolute differences between the tables and direct recomputation for one instance."""
    key, worst = row.name, {}

    def note(what, table_value, direct):
        worst[what] = max(worst.get(what, 0.0), abs(float(table_value) - float(direct)))

    ids = {name: torch.as_tensor([list(row[f"{name}_ids"])]) for name in ("caption", "foil", "negated", "non_negated")}
    eot = torch.as_tensor([len(row["negated_ids"]) - 1])
    image_emb = model.encode_image(pixels).embedding
    cap_emb, foil_emb = model.encode_text(ids["caption"]).embedding, model.encode_text(ids["foil"]).embedding
    s_c, s_f = similarity_pair(model, image_emb, cap_emb, foil_emb)
    d = s_c - s_f
    scores = tables["scores"]
    note("scores d", scores.loc[(variants["scores"], key), "d"], d)
    n_text = model.text.n_layers
    neg_pos, last = int(row["negator_pos"]), int(eot.item())
    donor = model.text.run(ids["negated"], cache=["resid", "pattern"], pool_index=eot).cache
    if "causal_tracing" in tables and key in tables["causal_tracing"].index.get_level_values(0):
        cells = [(0, neg_pos), (n_text, last)] + [
            (int(rng.integers(0, n_text + 1)), int(rng.integers(neg_pos, last + 1))) for _ in range(2)]
        for layer, pos in cells:
            hook = patch_positions(donor[("resid", layer)][:, pos], [0], [pos])
            emb = model.text.run(ids["non_negated"], hooks={("resid", layer): hook}, pool_index=eot).embedding
            s_star = model.similarity(image_emb, emb).item()
            d_star = s_c - s_star if row["negation"] == "foil" else s_star - s_f
            note("causal tracing d*", tables["causal_tracing"].loc[(key, layer, pos), "d_star"], d_star)
    if "selectivity" in tables and key in tables["selectivity"].index.get_level_values(0):
        clean = model.text.run(ids["non_negated"], cache=["pattern"], pool_index=eot).cache
        for layer in sorted({1, (n_text + 1) // 2, n_text}):
            diff = (donor[("pattern", layer)][0, :, neg_pos + 1:last + 1, neg_pos]
                    - clean[("pattern", layer)][0, :, neg_pos + 1:last + 1, neg_pos])
            for head, a in enumerate(diff.max(dim=1).values.tolist()):
                note("selectivity a", tables["selectivity"].loc[(key, layer, head), "a"], a)
    if "image_ablation" in tables and key in tables["image_ablation"].index.get_level_values(0):
        single = model.vision.run(single_colour(pixels), cache=list(COMPONENTS.values())).cache
        n_vis = model.vision.n_layers
        available = set(tables["image_ablation"].index.get_level_values(2))
        for layer, component in [(1, "mha"), (int(rng.integers(1, n_vis + 1)), "mlp"), (n_vis, "mha")]:
            if component not in available:
                continue
            site = COMPONENTS[component]
            value = single[(site, layer)]
            emb = model.vision.run(pixels, hooks={(site, layer): lambda x, key, v=value: v.clone()}).embedding
            s_c_star, s_f_star = similarity_pair(model, emb, cap_emb, foil_emb)
            note("image ablation IAE", tables["image_ablation"].loc[(key, layer, component), "iae"],
                 d - (s_c_star - s_f_star))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    ap.add_argument("--model", help="model id from the config (default: the first)")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    config = yaml.safe_load(args.configfile.read_text())
    model_id = args.model or next(iter(config["models"]))
    negation = config.get("negation", {})
    variant = negation.get("causal_tracing", {}).get("variant", "rephrased")
    results = Path("results")
    out = results / "negation" / model_id
    positions = pd.read_parquet(results / "datasets" / model_id / f"valse_existence_{variant}_positions.parquet")
    positions = positions[positions["positions_ok"] & positions["equal_length"]].set_index("key")
    tables = {"scores": pd.read_parquet(out / "scores.parquet").set_index(["variant", "key"])}
    indices = {"causal_tracing": ["key", "layer", "position"], "selectivity": ["key", "layer", "head"],
               "image_ablation": ["key", "layer", "component"]}
    variants = {"scores": variant}
    for name, index in indices.items():
        if (out / f"{name}.parquet").exists():
            tables[name] = pd.read_parquet(out / f"{name}.parquet").set_index(index).sort_index()
        else:
            print(f"{out / f'{name}.parquet'} not found: not checked")
    model = load_model(config["models"][model_id], args.device)
    images = Path("results/synthetic/images" if negation.get("benchmark") == "synthetic" else "results/raw/images")
    rng = np.random.default_rng(args.seed)
    keys = rng.choice(positions.index.to_numpy(), min(args.instances, len(positions)), replace=False)
    worst: dict[str, float] = {}
    for key in keys:
        row = positions.loc[key]
        pixels = load_images([images / row["image_file"]], model.preprocess).to(model.device)
        for what, err in check_instance(model, row, pixels, tables, variants, rng).items():
            worst[what] = max(worst.get(what, 0.0), err)
    print(f"{model_id}, {variant} variant, instances {list(keys)}")
    for what, err in worst.items():
        print(f"  max |table - direct| {what:<22} {err:.2e}")
    failed = [what for what, err in worst.items() if not err <= args.tol]
    print("RESULT: "
          + (f"FAIL ({', '.join(failed)} above {args.tol:g})" if failed else f"PASS (all within {args.tol:g})"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
