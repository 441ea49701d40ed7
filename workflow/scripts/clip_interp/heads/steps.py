"""The workflow's steps of the heads study, as functions of files and tables (the rule scripts call these).

Layers are 1..L and heads 0..H-1 (:mod:`clip_interp.models.hooked`). The analysed layers are the last
``min(n_layers, L)`` (``heads.n_layers``); the decomposition study's TEXTSPAN table must cover them.

The map tables of (b) and (c) have a ``scope`` column: :data:`HEAD_SCOPE` for the map of head (``layer``,
``head``), :data:`MODEL_SCOPE` for the map summed over every head of every layer (``layer`` and ``head`` null).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from ..contributions import scores_to_maps
from ..encoding import encode_texts
from ..errors import InputError
from ..head_selection import HeadOutsideModel, select_heads
from . import ANALYSES, figures
from .analyses import (
    ALL_HEADS,
    contrastive_scores,
    head_image_neighbours,
    head_text_neighbours,
    property_heads,
    property_neighbours,
    topic_scores,
)
from .index import build_manifest
from .labels import PropertyMatcher, label_heads
from .llm import ChatEndpoint, label_heads_llm, load_examples
from .published import PAPER_SCORES, read_head_labels
from .scores import association as association_score
from .scores import entanglement_readings, label_agreement
from .taxonomy import load_taxonomy
from .vectors import store_batches, write_index_files

HEAD_SCOPE = "head"    # a map of one head
MODEL_SCOPE = "model"  # a map summed over every head of every layer


# --------------------------------------------------------------------------- layers and TEXTSPAN


def analysed_layers(n_layers: int, wanted: int) -> list[int]:
    """The last ``min(wanted, n_layers)`` layers of a tower of ``n_layers`` blocks."""
    return list(range(max(1, n_layers - wanted + 1), n_layers + 1))


def analysed_textspan(textspan: pd.DataFrame, layers: Sequence[int], source: str) -> pd.DataFrame:
    """The TEXTSPAN rows of ``layers``; an InputError naming the config keys when a layer is missing."""
    missing = sorted(set(layers) - set(textspan["layer"].astype(int)))
    if missing:
        raise InputError(f"the TEXTSPAN table {source} has no heads of layers {missing}; the heads study analyses "
                         f"layers {list(layers)}: raise `decomposition.textspan.n_layers` to at least `heads.n_layers`")
    return textspan[textspan["layer"].isin(layers)].sort_values(["layer", "head", "rank"]).reset_index(drop=True)


def text_encoder(model, batch_size: int):
    """``encode(texts) -> (M, E)`` unit text embeddings by ``model``'s text tower, on the CPU."""
    def encode(texts):
        return F.normalize(encode_texts(model, list(texts), batch_size=batch_size).float(), dim=-1).cpu()

    return encode


# --------------------------------------------------------------------------- labels and scores


def model_identity(spec: Mapping) -> tuple[str | None, str | None]:
    """``(open_clip name, pretrained tag)`` of a model entry: how the published labels and the paper name it."""
    if spec.get("backend") != "open_clip" or spec.get("random_init"):
        return None, None
    return spec.get("name"), spec.get("pretrained")


def published_for_model(published: pd.DataFrame, spec: Mapping) -> pd.DataFrame:
    """The published labels (``layer, head, label``; layers 1..L) of the model of ``spec``; none for a model the
    paper did not label."""
    name, pretrained = model_identity(spec)
    rows = published[(published["model"] == name) & (published["pretrained"] == pretrained)]
    return rows[["layer", "head", "label"]].reset_index(drop=True)


def summed_layer_counts(labels: pd.DataFrame, model: str) -> pd.DataFrame:
    """Heads per (model, property, layer): ``model, label, layer, n_heads``."""
    counts = labels.groupby(["label", "layer"]).size().rename("n_heads").reset_index()
    counts.insert(0, "model", model)
    return counts.sort_values(["label", "layer"]).reset_index(drop=True)


# --------------------------------------------------------------------------- the explorer's manifest


def labelled_layers(label_table) -> list[int]:
    """The analysed layers (1..L): those of a label table's heads, sorted."""
    return sorted(set(pd.read_parquet(label_table, columns=["layer"])["layer"].astype(int)))


def label_groups(label_tables: Sequence, layers: Sequence[int]) -> list[list[tuple[int, int]]]:
    """The head groups whose sums the index holds: for each label table and property, its heads of ``layers`` as
    positions ``(a, h)`` (a: position among ``layers``), groups of two or more heads, each once, in table order."""
    groups = []
    for table in label_tables:
        labels = pd.read_parquet(table, columns=["layer", "head", "label"])
        labels = labels[labels["layer"].isin(layers)].sort_values(["layer", "head"])
        for _, heads in labels.groupby("label", sort=True):
            group = [(list(layers).index(int(r.layer)), int(r.head)) for r in heads.itertuples()]
            if len(group) > 1 and group not in groups:
                groups.append(group)
    return groups


def write_explorer_index(store, layers: Sequence[int], paths: Mapping[str, str], label_tables: Sequence = ()
                         ) -> dict:
    """Write the explorer's index files (:data:`clip_interp.heads.vectors.INDEX_FILES`: float16 search copy,
    float32 exact copy, norms, and the summed heads of each property of each label table, :func:`label_groups`) of
    ``layers`` from the decomposition store to ``paths`` (relative to the working directory); their description
    for the manifest, with the layers."""
    n, _, n_heads, width, batches = store_batches(store, layers)
    groups = label_groups(label_tables, layers)
    description = write_index_files(batches, (n, len(layers), n_heads, width), paths, groups=groups)
    return {**description, "layers": [int(x) for x in layers]}


def manifest_for(*, model: str, spec: Mapping, image_set: str, store, images, textspan, labels: Mapping[str, str],
                 scores, manifest_path, n_images: int, layers: Sequence[int], n_layers: int, n_heads: int,
                 convention: str, index: Mapping | None = None) -> dict:
    """The explorer's manifest (:mod:`clip_interp.heads.index`) for files given relative to the working
    directory; ``root`` is that directory relative to the manifest's folder. ``index``: the index files'
    description (:func:`write_explorer_index`), whose layers must be ``layers``."""
    if index is not None and list(index.get("layers", [])) != list(layers):
        raise InputError(f"the explorer's index files cover layers {index.get('layers')} but the label tables "
                         f"{list(layers)}; re-run rule heads_explorer_index for model {model}")
    root = os.path.relpath(os.getcwd(), Path(manifest_path).resolve().parent)
    return build_manifest(model=model, spec=spec, image_set=image_set, store=store, images=images, textspan=textspan,
                          labels=labels, scores=scores, layers=layers, n_layers=n_layers, n_heads=n_heads,
                          n_images=n_images, convention=convention, root=Path(root).as_posix(), index=index)


# --------------------------------------------------------------------------- the analyses over the image set


def query_rows(rows: Sequence[int], n_images: int) -> list[int]:
    bad = [row for row in rows if not 0 <= row < n_images]
    if bad:
        raise InputError(f"`heads.analyses.images` has rows {bad}, but the image set has {n_images} images "
                         f"(rows 0..{n_images - 1}); fix the list")
    return list(rows)


def query_heads(index, heads, labeller: str | None = None) -> list[tuple[int, int]]:
    """The configured heads (``auto``: per analysed layer, the head whose label has the largest confidence,
    ties to the lower head), checked against the index (:func:`clip_interp.head_selection.select_heads`: a
    negative layer counts from the end)."""
    if heads == "auto":
        table = index.label_table(labeller).sort_values(["layer", "confidence", "head"], ascending=[True, False, True])
        return [(int(r.layer), int(r.head)) for r in table.drop_duplicates("layer").itertuples()]
    try:
        return select_heads(heads, index.n_layers, index.n_heads, layers=index.layers)
    except HeadOutsideModel as error:
        layer, head = error.resolved
        raise InputError(f"`heads.analyses.heads` has [{layer}, {head}], which is not a head of the analysed "
                         f"layers {index.layers} (heads 0..{index.n_heads - 1}) of model {index.model_id}") from None


def query_properties(index, properties, labeller: str | None = None) -> tuple[list[str], list[str]]:
    """The properties searched (``auto``: every property that labels a head) and the configured ones that label
    no head of this model (skipped, and reported)."""
    available = index.properties(labeller)
    if properties == "auto":
        return available, []
    return [p for p in properties if p in available], [p for p in properties if p not in available]


def _query_image(index, row: int):
    with Image.open(index.images["path"][row]) as image:
        return image.convert("RGB")


def _tag(table: pd.DataFrame, **columns) -> pd.DataFrame:
    for position, (name, value) in enumerate(columns.items()):
        table.insert(position, name, value)
    return table


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True)


def _neighbour_table(index, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The neighbour rows with each image's path relative to the workflow's working directory (the index's root),
    as the image lists hold it, so a table does not depend on where the workflow was run."""
    table = _concat(parts)
    table["path"] = [os.path.relpath(path, index.root) for path in table["path"]]
    return table


def property_neighbour_table(index, rows: Sequence[int], properties: Sequence[str], k: int) -> pd.DataFrame:
    """(a) per query image and property: ``query_row, query_image, property, n_heads, rank, row, image, path,
    score`` (paths relative to the working directory)."""
    parts = []
    for row in rows:
        image = _query_image(index, row)
        for prop in properties:
            found = property_neighbours(index, image, prop, k)
            parts.append(_tag(found, query_row=row, query_image=index.images["key"][row], property=prop,
                              n_heads=len(property_heads(index, prop))))
    return _neighbour_table(index, parts)


def image_neighbour_table(index, rows: Sequence[int], heads: Sequence[tuple[int, int]], k: int) -> pd.DataFrame:
    """(d) per query image and head: ``query_row, query_image, layer, head, rank, row, image, path, score``."""
    parts = []
    for row in rows:
        image = _query_image(index, row)
        for layer, head in heads:
            found = head_image_neighbours(index, image, layer, head, k)
            parts.append(_tag(found, query_row=row, query_image=index.images["key"][row], layer=layer, head=head))
    return _neighbour_table(index, parts)


def text_neighbour_table(index, texts: Sequence[str], heads: Sequence[tuple[int, int]], k: int) -> pd.DataFrame:
    """(e) per text and head: ``text, layer, head, rank, row, image, path, score``."""
    parts = [_tag(head_text_neighbours(index, text, layer, head, k), text=text, layer=layer, head=head)
             for text in texts for layer, head in heads]
    return _neighbour_table(index, parts)


def _map_row(scores, grid) -> dict:
    values = scores.double().numpy()
    peak = int(values.argmax())
    return {"grid_rows": int(grid[0]), "grid_cols": int(grid[1]), "patch_scores": values.tolist(),
            "peak_patch": peak, "max_score": float(values.max()), "mean_score": float(values.mean())}


def map_heads(heads: Sequence[tuple[int, int]]) -> list[tuple[int | None, int | None]]:
    """The heads of the map analyses: each configured head, then every head of every layer together
    (:data:`~clip_interp.heads.analyses.ALL_HEADS`)."""
    return [*heads, ALL_HEADS]


def scope_columns(layer: int | None, head: int | None) -> dict:
    """The ``scope, layer, head`` of a map table row for the map of ``(layer, head)`` (:func:`map_heads`)."""
    if (layer, head) == ALL_HEADS:
        return {"scope": MODEL_SCOPE, "layer": None, "head": None}
    return {"scope": HEAD_SCOPE, "layer": layer, "head": head}


def _map_table(records: list[dict]) -> pd.DataFrame:
    """The map rows as a table, ``layer`` and ``head`` as nullable integers (null in the model scope)."""
    return pd.DataFrame(records).astype({"layer": "Int64", "head": "Int64"})


def topic_map_table(index, rows: Sequence[int], texts: Sequence[str], heads: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """(b) per query image, text and map (``scope``: each head, then all heads of all layers): the raw patch scores
    (row-major over the patch grid), the peak patch, the largest and mean score."""
    grid = index.model().vision.grid_size
    records = []
    for row in rows:
        image = _query_image(index, row)
        for layer, head in map_heads(heads):
            scores = topic_scores(index, image, list(texts), layer, head)
            for text, text_scores in zip(texts, scores):
                records.append({"query_row": row, "query_image": index.images["key"][row], "text": text,
                                **scope_columns(layer, head), **_map_row(text_scores, grid)})
    return _map_table(records)


def contrastive_map_table(index, rows: Sequence[int], pairs: Sequence[Sequence[str]],
                          heads: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """(c) per query image, pair (a, b), map (``scope``: each head, then all heads) and direction (``a-b``,
    ``b-a``): the patch scores."""
    grid = index.model().vision.grid_size
    records = []
    for row in rows:
        image = _query_image(index, row)
        for text_a, text_b in pairs:
            for layer, head in map_heads(heads):
                a_minus_b, b_minus_a = contrastive_scores(index, image, text_a, text_b, layer, head)
                for direction, scores in (("a-b", a_minus_b), ("b-a", b_minus_a)):
                    records.append({"query_row": row, "query_image": index.images["key"][row], "text_a": text_a,
                                    "text_b": text_b, "direction": direction, **scope_columns(layer, head),
                                    **_map_row(scores, grid)})
    return _map_table(records)


def maps_of(table: pd.DataFrame, size: int) -> list[np.ndarray]:
    """The soft maps (size, size) in [0, 1] of a map table's rows (:func:`clip_interp.contributions.scores_to_maps`)."""
    grids = table[["grid_rows", "grid_cols"]].drop_duplicates()
    if len(grids) != 1:
        raise InputError(f"a map table mixes patch grids {grids.values.tolist()}")
    scores = torch.as_tensor(np.stack(table["patch_scores"].to_numpy()), dtype=torch.float32)
    grid = tuple(int(x) for x in grids.iloc[0])
    return list(scores_to_maps(scores, grid, (size, size)).numpy())


def head_name(layer: int, head: int, index=None) -> str:
    """``L<layer> H<head>``, with the head's label by the default labeller when ``index`` is given."""
    label = index.head_label(layer, head) if index is not None else None
    return f"L{layer} H{head}" + (f" ({label})" if label else "")


def map_name(row, index=None) -> str:
    """The column title of a map table row: ``all heads`` in the model scope, else :func:`head_name`."""
    if row.scope == MODEL_SCOPE:
        return "all heads"
    return head_name(int(row.layer), int(row.head), index)


# --------------------------------------------------------------------------- labels and scores (rules)


def label_table(labeller: str, textspan: pd.DataFrame, model, *, taxonomy_path, n_layers: int, n_texts: int,
                batch_size: int, textspan_path: str = "the TEXTSPAN table", examples_path=None, cache_path=None
                ) -> tuple[pd.DataFrame, list[int]]:
    """The label table of ``labeller`` (``taxonomy`` or ``llm``) for the heads of the analysed layers
    (the last ``min(n_layers, L)`` of ``model``'s image tower), and those layers."""
    layers = analysed_layers(model.vision.n_layers, n_layers)
    heads = analysed_textspan(textspan, layers, str(textspan_path))
    taxonomy = load_taxonomy(taxonomy_path)
    matcher = PropertyMatcher(text_encoder(model, batch_size), taxonomy)
    if labeller == "taxonomy":
        return label_heads(heads, matcher, n_texts), layers
    if labeller == "llm":
        table = label_heads_llm(heads, ChatEndpoint.from_environment(), load_examples(examples_path, taxonomy),
                                n_texts, cache_path, taxonomy, matcher=matcher)
        return table, layers
    raise InputError(f"unknown labeller {labeller!r}; choose taxonomy or llm")


def score_table(labels: Mapping[str, pd.DataFrame], model, spec: Mapping, *, taxonomy_path, published_path,
                association: Mapping, batch_size: int) -> pd.DataFrame:
    """One row per labeller: the entanglement readings, the association score, the agreement with the published
    labels of this model (NaN, with ``n_agreement_heads`` 0, for a model they do not cover) and the paper's scores."""
    taxonomy = load_taxonomy(taxonomy_path)
    matcher = PropertyMatcher(text_encoder(model, batch_size), taxonomy)
    published = (published_for_model(read_head_labels(published_path), spec) if published_path
                 else pd.DataFrame(columns=["layer", "head", "label"]))
    name, pretrained = model_identity(spec)
    paper = PAPER_SCORES.get((name, pretrained), {})
    rows = []
    for labeller, table in labels.items():
        agreement = label_agreement(table, published, taxonomy) if len(published) else {}
        rows.append({
            "labeller": labeller, "open_clip_name": name, "pretrained": pretrained,
            **entanglement_readings(table),
            "association": association_score(table, matcher, association["n_texts"], association["min_matches"]),
            "association_n_texts": association["n_texts"], "association_min_matches": association["min_matches"],
            "agreement": agreement.get("agreement", float("nan")),
            "agreement_mapped": agreement.get("agreement_mapped", float("nan")),
            "n_agreement_heads": agreement.get("n_heads", 0),
            "paper_entanglement": paper.get("entanglement", float("nan")),
            "paper_association": paper.get("association", float("nan")),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the analyses (rules)


@dataclass(frozen=True)
class AnalysisQuery:
    """What every analysis step gets: the index, the query rows of the image set, the heads (resolved), the
    ``heads.analyses`` settings, the figure paths and the figure title's prefix (the model)."""

    index: object
    rows: list[int]
    heads: list[tuple[int, int]]
    settings: Mapping
    figure_paths: Sequence
    title: str

    @property
    def size(self) -> int:
        return self.index.model().image_size

    def pictures(self, rows) -> dict[int, np.ndarray]:
        """The model's view (:func:`clip_interp.heads.figures.model_view`) of each image row of ``rows``."""
        paths = self.index.images["path"]
        return {int(row): figures.model_view(paths[int(row)], self.size) for row in sorted(set(rows))}


def property_neighbours_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(a) The property-neighbour table of every query image and configured property, and its grid."""
    index, settings = query.index, query.settings
    properties, skipped = query_properties(index, settings["properties"])
    if not properties:
        raise InputError(f"none of `heads.analyses.properties` {settings['properties']} labels a head of model "
                         f"{index.model_id} (labelled: {', '.join(index.properties())}); use auto or those")
    table = property_neighbour_table(index, query.rows, properties, settings["k"])
    pictures = query.pictures([*query.rows, *table["row"]])
    groups = [(f"{image}\n{prop} ({_heads_count(int(part['n_heads'].iloc[0]))})", pictures[row], part)
              for (row, image, prop), part in table.groupby(["query_row", "query_image", "property"], sort=False)]
    figures.neighbour_grid(groups, pictures, query.figure_paths,
                           query.title + "images nearest by the summed heads of a property")
    return table, {"properties": properties, "skipped": [f"property {p!r} labels no head" for p in skipped]}


def image_neighbours_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(d) The head-image-neighbour table of every query image and head, and its grid."""
    index = query.index
    table = image_neighbour_table(index, query.rows, query.heads, query.settings["k"])
    pictures = query.pictures([*query.rows, *table["row"]])
    groups = [(f"{image}\n{head_name(layer, head, index)}", pictures[row], part)
              for (row, image, layer, head), part in table.groupby(["query_row", "query_image", "layer", "head"],
                                                                   sort=False)]
    figures.neighbour_grid(groups, pictures, query.figure_paths,
                           query.title + "images nearest by one head's contribution")
    return table, {}


def text_neighbours_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(e) The head-text-neighbour table of every configured text and head, and its grid."""
    index = query.index
    table = text_neighbour_table(index, query.settings["texts"], query.heads, query.settings["k"])
    pictures = query.pictures(table["row"])
    groups = [(f"{part['text'].iloc[0]}\n{head_name(int(part['layer'].iloc[0]), int(part['head'].iloc[0]), index)}",
               None, part) for _, part in table.groupby(["text", "layer", "head"], sort=False)]
    figures.neighbour_grid(groups, pictures, query.figure_paths,
                           query.title + "images whose head contribution is nearest a text")
    return table, {}


def topic_maps_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(b) The topic-map table of every query image, text and map, and its grid."""
    table = topic_map_table(query.index, query.rows, query.settings["texts"], query.heads)
    _draw_maps(query, table, ["query_row", "text"], lambda part: part["text"].iloc[0],
               "per-head topic maps (patch terms on a text)")
    return table, {}


def contrastive_maps_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(c) The contrastive-map table of every query image, text pair, map and direction, and its grid."""
    pairs = [list(pair) for pair in query.settings["contrastive"]]
    table = contrastive_map_table(query.index, query.rows, pairs, query.heads)
    _draw_maps(query, table, ["query_row", "text_a", "text_b", "direction"],
               lambda part: _direction_label(part.iloc[0]), "contrastive maps (text a minus text b, and the reverse)")
    return table, {"pairs": pairs}


# Each analysis of :data:`clip_interp.heads.ANALYSES` -> its step: ``step(query) -> (table, metadata)``.
ANALYSIS_STEPS: dict[str, Callable[[AnalysisQuery], tuple[pd.DataFrame, dict]]] = {
    "property_neighbours": property_neighbours_step,
    "topic_maps": topic_maps_step,
    "contrastive_maps": contrastive_maps_step,
    "image_neighbours": image_neighbours_step,
    "text_neighbours": text_neighbours_step,
}


def run_analysis(analysis: str, index, settings: Mapping, figure_paths) -> tuple[pd.DataFrame, dict]:
    """Run ``analysis`` (one of :data:`clip_interp.heads.ANALYSES`) over the configured queries
    (``heads.analyses``), draw its grid to ``figure_paths``, and return its table and the metadata to store with it
    (queries, skipped properties)."""
    if analysis not in ANALYSIS_STEPS:
        raise InputError(f"unknown analysis {analysis!r}; choose from {ANALYSES}")
    rows = query_rows(settings["images"], index.n)
    heads = query_heads(index, settings["heads"])
    query = AnalysisQuery(index, rows, heads, settings, list(figure_paths), f"{index.model_id}: ")
    metadata = {"analysis": analysis, "query_rows": rows, "heads": [list(h) for h in heads], "k": settings["k"]}
    table, found = ANALYSIS_STEPS[analysis](query)
    return table, {**metadata, **found}


def _direction_label(row) -> str:
    first, second = (row["text_a"], row["text_b"]) if row["direction"] == "a-b" else (row["text_b"], row["text_a"])
    return f"{first}\nminus {second}"


def _draw_maps(query: AnalysisQuery, table: pd.DataFrame, row_columns: list[str], label: Callable, title: str) -> None:
    """The map grid of a map table: one row per group of ``row_columns`` (labelled by ``label(part)``), one column
    per map."""
    table = table.assign(map=maps_of(table, query.size))
    pictures = query.pictures(table["query_row"])
    grid_rows = []
    for _, part in table.groupby(row_columns, sort=False):
        first = part.iloc[0]
        cells = [(map_name(r, query.index), r.map) for r in part.itertuples()]
        grid_rows.append((f"{first['query_image']}\n{label(part)}", pictures[int(first["query_row"])], cells))
    figures.map_grid(grid_rows, query.figure_paths, query.title + title)


# --------------------------------------------------------------------------- cross-model


def cross_model(models: Sequence[str], scores: Sequence[pd.DataFrame], labels: Sequence[pd.DataFrame], *,
                scores_figure: Sequence, distribution_figure: Sequence, layers_figure: Sequence
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cross-model table (one row per model and labeller: readings, association, agreement, the paper's values)
    and the per-(model, property, layer) head counts of the taxonomy labels; draws the three figures, each to its
    paths (PNG, PDF)."""
    table = pd.concat([part.assign(model=model) for model, part in zip(models, scores)], ignore_index=True)
    table = table[["model", *[c for c in table.columns if c != "model"]]]
    layers = pd.concat([summed_layer_counts(part, model) for model, part in zip(models, labels)], ignore_index=True)
    taxonomy_rows = table[table["labeller"] == "taxonomy"].reset_index(drop=True)
    figures.scores_per_model(taxonomy_rows, scores_figure, "Interpretability scores per model (taxonomy labeller)")
    counts = layers.groupby(["label", "model"])["n_heads"].sum().unstack("model").reindex(columns=list(models))
    figures.property_distribution(counts.fillna(0).astype(int), distribution_figure,
                                  "Heads per property and model (taxonomy labeller)")
    figures.property_layers(layers, layers_figure, "Layers where each property labels heads (L<layer>×<heads>)")
    return table, layers


def _heads_count(n: int) -> str:
    return f"{n} head" if n == 1 else f"{n} heads"
