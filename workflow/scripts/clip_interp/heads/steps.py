"""The workflow's steps of the heads study, as functions of files and tables (the rule scripts call these).

Layers are 1..L and heads 0..H-1 (:mod:`clip_interp.models.hooked`). The analysed layers are the last
``min(n_layers, L)`` (``heads.n_layers``); the decomposition study's TEXTSPAN table must cover them.

Tables and figures name a head both ways, ``L12 H3 (paper L11.H3)`` (:func:`head_name`): the paper and its app
number layers from 0 (the tables' ``paper_layer`` column), heads from 0 as here.

The map tables of (b) and (c) have a ``scope`` column: :data:`HEAD_SCOPE` for the map of head (``layer``,
``head``), :data:`MODEL_SCOPE` for the map summed over every head of every layer (``layer`` and ``head`` null).
"""

from __future__ import annotations

import logging
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
from . import ANALYSES, figures, head_title
from .analyses import (
    ALL_HEADS,
    APP_GROUPS,
    contrastive_scores,
    head_image_neighbours,
    head_text_neighbours,
    property_heads,
    property_neighbours,
    property_sets,
    set_properties,
    top_textspan_texts,
    topic_scores,
)
from .index import build_manifest
from .judgements import read_judgements
from .labels import PropertyMatcher, label_heads
from .llm import ChatEndpoint, label_heads_llm, load_examples
from .published import PAPER_SCORES, label_heads_published, published_identity, read_head_labels
from .scores import association as association_score
from .scores import entanglement_readings, label_agreement
from .taxonomy import Taxonomy, load_taxonomy
from .vectors import store_batches, write_index_files
from .vocabulary import label_mapping, mapped_labels, normalise_free_label

logger = logging.getLogger(__name__)

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
    """The head groups whose sums the index holds: for each table and property, its heads of ``layers`` as
    positions ``(a, h)`` (a: position among ``layers``), groups of two or more heads, each once, in table order.
    A table is a label table (``layer, head, label``) or a property-group table such as the app's
    (``property, layer, head``, where a head may be in several groups)."""
    groups = []
    for table in label_tables:
        labels = pd.read_parquet(table)
        labels = labels.rename(columns={"property": "label"})[["layer", "head", "label"]]
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
                 convention: str, property_groups: Mapping[str, str] | None = None,
                 index: Mapping | None = None) -> dict:
    """The explorer's manifest (:mod:`clip_interp.heads.index`) for files given relative to the working
    directory; ``root`` is that directory relative to the manifest's folder. ``index``: the index files'
    description (:func:`write_explorer_index`), whose layers must be ``layers``."""
    if index is not None and list(index.get("layers", [])) != list(layers):
        raise InputError(f"the explorer's index files cover layers {index.get('layers')} but the label tables "
                         f"{list(layers)}; re-run rule heads_explorer_index for model {model}")
    root = os.path.relpath(os.getcwd(), Path(manifest_path).resolve().parent)
    return build_manifest(model=model, spec=spec, image_set=image_set, store=store, images=images, textspan=textspan,
                          labels=labels, scores=scores, layers=layers, n_layers=n_layers, n_heads=n_heads,
                          n_images=n_images, convention=convention, root=Path(root).as_posix(),
                          property_groups=property_groups, index=index)


def app_property_groups(property_heads: pd.DataFrame, spec: Mapping) -> pd.DataFrame:
    """The CLIP-InterpreT app's property groups of the model of ``spec`` (``property, layer, paper_layer, head``;
    layers 1..L, ``paper_layer`` the published 0-based one), from
    :func:`~clip_interp.heads.published.read_property_heads`'s table; an InputError for a model the app does not
    cover."""
    name, pretrained = model_identity(spec)
    rows = property_heads[(property_heads["model"] == name) & (property_heads["pretrained"] == pretrained)]
    if rows.empty:
        have = sorted(set(zip(property_heads["model"], property_heads["pretrained"])))
        raise InputError(f"the app's property groups have no model {name!r} with pretrained {pretrained!r}; they "
                         f"cover {have}")
    rows = rows.rename(columns={"layer_published": "paper_layer"})[["property", "layer", "paper_layer", "head"]]
    return rows.sort_values(["property", "layer", "head"]).reset_index(drop=True)


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


def query_property_set(index, setting: str) -> str:
    """The property set of the property search (``heads.analyses.property_set``): ``auto`` is the CLIP-InterpreT
    app's groups (:data:`~clip_interp.heads.analyses.APP_GROUPS`) for a model the app covers, else the default
    labeller; any other value must be a property set of the index (a labeller, or ``app``)."""
    if setting == "auto":
        return APP_GROUPS if APP_GROUPS in index.property_groups else index.default_labeller
    if setting not in property_sets(index):
        why = (" (the app's groups exist only for its six models)" if setting == APP_GROUPS else "")
        raise InputError(f"`heads.analyses.property_set` is {setting!r}, which model {index.model_id} does not "
                         f"have{why}; its property sets: {', '.join(property_sets(index))}; use auto or one of those")
    return setting


def query_texts(index, texts, heads: Sequence[tuple[int, int]], n_texts: int) -> dict:
    """The texts of each head of ``heads`` (``texts``: a list, the same for every head; ``textspan``: the head's own
    first ``n_texts`` TEXTSPAN texts, as the paper's section 5.5) and, under
    :data:`~clip_interp.heads.analyses.ALL_HEADS`, every text of them once (in order)."""
    if texts == "textspan":
        per_head = {(layer, head): top_textspan_texts(index, layer, head, n_texts) for layer, head in heads}
    else:
        per_head = {(layer, head): list(texts) for layer, head in heads}
    return {**per_head, ALL_HEADS: list(dict.fromkeys(t for found in per_head.values() for t in found))}


def query_properties(index, properties, property_set: str | None = None) -> tuple[list[str], list[str]]:
    """The properties searched (``auto``: every property of ``property_set`` with a head in the analysed layers)
    and the configured ones that have none (skipped, and reported)."""
    available = set_properties(index, property_set)
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


def property_neighbour_table(index, rows: Sequence[int], properties: Sequence[str], k: int,
                             property_set: str | None = None, similarity: str = "dot") -> pd.DataFrame:
    """(a) per query image and property of ``property_set``: ``query_row, query_image, property_set, property,
    n_heads, similarity, rank, row, image, path, score`` (paths relative to the working directory)."""
    property_set = property_set or index.default_labeller
    parts = []
    for row in rows:
        image = _query_image(index, row)
        for prop in properties:
            found = property_neighbours(index, image, prop, k, property_set, similarity)
            parts.append(_tag(found, query_row=row, query_image=index.images["key"][row], property_set=property_set,
                              property=prop, n_heads=len(property_heads(index, prop, property_set)),
                              similarity=similarity))
    return _neighbour_table(index, parts)


def image_neighbour_table(index, rows: Sequence[int], heads: Sequence[tuple[int, int]], k: int) -> pd.DataFrame:
    """(d) per query image and head: ``query_row, query_image, layer, paper_layer, head, rank, row, image, path,
    score`` (``paper_layer`` = layer - 1, the paper's 0-based number)."""
    parts = []
    for row in rows:
        image = _query_image(index, row)
        for layer, head in heads:
            found = head_image_neighbours(index, image, layer, head, k)
            parts.append(_tag(found, query_row=row, query_image=index.images["key"][row], layer=layer,
                              paper_layer=layer - 1, head=head))
    return _neighbour_table(index, parts)


def text_neighbour_table(index, texts: Mapping, heads: Sequence[tuple[int, int]], k: int) -> pd.DataFrame:
    """(e) per head and each of its texts (``texts``: head -> texts, :func:`query_texts`): ``text, layer,
    paper_layer, head, rank, row, image, path, score``."""
    parts = [_tag(head_text_neighbours(index, text, layer, head, k), text=text, layer=layer, paper_layer=layer - 1,
                  head=head)
             for layer, head in heads for text in texts[(layer, head)]]
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
    """The ``scope, layer, paper_layer, head`` of a map table row for the map of ``(layer, head)``
    (:func:`map_heads`)."""
    if (layer, head) == ALL_HEADS:
        return {"scope": MODEL_SCOPE, "layer": None, "paper_layer": None, "head": None}
    return {"scope": HEAD_SCOPE, "layer": layer, "paper_layer": layer - 1, "head": head}


def _map_table(records: list[dict]) -> pd.DataFrame:
    """The map rows as a table, ``layer``, ``paper_layer`` and ``head`` as nullable integers (null in the model
    scope)."""
    return pd.DataFrame(records).astype({"layer": "Int64", "paper_layer": "Int64", "head": "Int64"})


def topic_map_table(index, rows: Sequence[int], texts: Mapping, heads: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """(b) per query image, map (``scope``: each head, then all heads of all layers) and each text of that map
    (``texts``: map -> texts, :func:`query_texts`): the raw patch scores (row-major over the patch grid), the peak
    patch, the largest and mean score."""
    grid = index.model().vision.grid_size
    records = []
    for row in rows:
        image = _query_image(index, row)
        for layer, head in map_heads(heads):
            scores = topic_scores(index, image, texts[(layer, head)], layer, head)
            for text, text_scores in zip(texts[(layer, head)], scores):
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
    """``L<layer> H<head> (paper L<layer - 1>.H<head>)``: ours (layers 1..L) and the paper's numbering (layers from
    0; heads from 0 in both), with the head's label by the default labeller when ``index`` is given."""
    label = index.head_label(layer, head) if index is not None else None
    return head_title(layer, head) + (f": {label}" if label else "")


def map_name(row, index=None) -> str:
    """The column title of a map table row: ``all heads`` in the model scope, else :func:`head_name`."""
    if row.scope == MODEL_SCOPE:
        return "all heads"
    return head_name(int(row.layer), int(row.head), index)


# --------------------------------------------------------------------------- labels and scores (rules)


def label_table(labeller: str, textspan: pd.DataFrame, model, *, taxonomy_path, n_layers: int, n_texts: int,
                batch_size: int, textspan_path: str = "the TEXTSPAN table", examples_path=None, cache_path=None,
                vocabulary: str = "open", published_path=None, spec: Mapping | None = None
                ) -> tuple[pd.DataFrame, list[int]]:
    """The label table of ``labeller`` (``taxonomy``, ``llm`` in ``vocabulary``, or ``published``: the labels at
    ``published_path`` of the model of ``spec``) for the heads of the analysed layers (the last
    ``min(n_layers, L)`` of ``model``'s image tower), and those layers."""
    layers = analysed_layers(model.vision.n_layers, n_layers)
    heads = analysed_textspan(textspan, layers, str(textspan_path))
    taxonomy = load_taxonomy(taxonomy_path)
    matcher = PropertyMatcher(text_encoder(model, batch_size), taxonomy)
    if labeller == "taxonomy":
        return label_heads(heads, matcher, n_texts), layers
    if labeller == "llm":
        table = label_heads_llm(heads, ChatEndpoint.from_environment(), load_examples(examples_path, taxonomy),
                                n_texts, cache_path, taxonomy, matcher=matcher, vocabulary=vocabulary)
        return table, layers
    if labeller == "published":
        identity = published_identity(spec or {})
        if identity is None:
            raise InputError(f"the published labels cover six models only ({', '.join(map(' '.join, PAPER_SCORES))}),"
                             f" not the model {dict(spec or {})}; remove published from `heads.labellers`")
        table, left_out = label_heads_published(read_head_labels(published_path), identity, heads, n_texts, matcher)
        logger.info("published labels: %d heads labelled, %d analysed heads without a published label (left out)",
                    len(table), left_out)
        return table, layers
    raise InputError(f"unknown labeller {labeller!r}; choose taxonomy, llm or published")


def llm_label_mapping(labels: pd.DataFrame, model, *, taxonomy_path, batch_size: int) -> pd.DataFrame:
    """The nearest taxonomy property of each distinct label of a label table
    (:func:`clip_interp.heads.vocabulary.label_mapping`, by ``model``'s text tower)."""
    matcher = PropertyMatcher(text_encoder(model, batch_size), load_taxonomy(taxonomy_path))
    return label_mapping(labels["label"].tolist(), matcher)


# How each labeller's labels are read by the scores: ``closed`` (taxonomy property names, read as they are) or
# ``open`` (free-form: normalised for the entanglement, mapped onto the taxonomy for the mapped readings and the
# association); the LLM's is `heads.llm.vocabulary`.
LABELLER_VOCABULARY = {"taxonomy": "closed", "published": "open"}


def label_readings(labeller: str, table: pd.DataFrame, taxonomy: Taxonomy, vocabulary: str,
                   mapping: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The label table as the entanglement reads it, the table mapped onto the taxonomy, and how it was mapped.

    ``closed``: both are the table as it is (``identity``). ``open``: the first has each label replaced by
    :func:`~clip_interp.heads.vocabulary.normalise_free_label` (a label that normalises to nothing is unlabelled);
    the second maps each label to a property, by ``mapping`` (``text embedding``: the LLM's
    ``llm_label_mapping.parquet``) or else by the taxonomy's names and aliases (``taxonomy aliases``, as
    :func:`clip_interp.heads.published.published_scores`; a label of none is unlabelled)."""
    if vocabulary == "closed":
        return table, table, "identity"
    read = table.assign(label=table["label"].map(lambda label: None if pd.isna(label)
                                                 else normalise_free_label(label) or None))
    if mapping is not None:
        return read, table.assign(label=mapped_labels(table["label"], mapping, f"the {labeller} label mapping")), \
            "text embedding"
    return read, table.assign(label=table["label"].map(taxonomy.canonical)), "taxonomy aliases"


def _judged_association(judged: pd.DataFrame | None, labeller: str) -> float:
    return float(judged.loc[judged["labeller"] == labeller, "associated"].mean())


def score_table(labels: Mapping[str, pd.DataFrame], model, spec: Mapping, *, taxonomy_path, published_path,
                association: Mapping, batch_size: int, llm_vocabulary: str = "open",
                llm_mapping: pd.DataFrame | None = None, judgements=None, model_id: str = "") -> pd.DataFrame:
    """One row per labeller: the entanglement readings of its labels as read (``label_vocabulary``; open labels
    normalised) and, as ``mapped_*``, of its labels mapped onto the taxonomy (``mapped_by``; :func:`label_readings`);
    the association (of the mapped labels by the matcher, or from the filled judging sheet ``judgements`` of model
    ``model_id``: ``association_method``); the agreement of the mapped labels with the published labels of this
    model (NaN, with ``n_agreement_heads`` 0, for a model they do not cover and for the ``published`` row itself);
    and the paper's scores."""
    taxonomy = load_taxonomy(taxonomy_path)
    matcher = PropertyMatcher(text_encoder(model, batch_size), taxonomy)
    published = (published_for_model(read_head_labels(published_path), spec) if published_path
                 else pd.DataFrame(columns=["layer", "head", "label"]))
    n_texts, min_matches = association["n_texts"], association["min_matches"]
    judged = read_judgements(judgements, model_id, labels, n_texts, min_matches) if judgements else None
    name, pretrained = model_identity(spec)
    paper = PAPER_SCORES.get((name, pretrained), {})
    rows = []
    for labeller, table in labels.items():
        vocabulary = llm_vocabulary if labeller == "llm" else LABELLER_VOCABULARY[labeller]
        read, mapped, mapped_by = label_readings(labeller, table, taxonomy, vocabulary,
                                                 llm_mapping if labeller == "llm" else None)
        agreement = label_agreement(mapped, published, taxonomy) if len(published) and labeller != "published" else {}
        readings, mapped_readings = entanglement_readings(read), entanglement_readings(mapped)
        rows.append({
            "labeller": labeller, "open_clip_name": name, "pretrained": pretrained, **readings,
            "association": (association_score(mapped, matcher, n_texts, min_matches) if judged is None
                            else _judged_association(judged, labeller)),
            "association_n_texts": n_texts, "association_min_matches": min_matches,
            "agreement": agreement.get("agreement", float("nan")),
            "agreement_mapped": agreement.get("agreement_mapped", float("nan")),
            "n_agreement_heads": agreement.get("n_heads", 0),
            "paper_entanglement": paper.get("entanglement", float("nan")),
            "paper_association": paper.get("association", float("nan")),
            "label_vocabulary": vocabulary, "mapped_by": mapped_by,
            **{f"mapped_{key}": mapped_readings[key] for key in ("entanglement", "shared_share", "pairwise_share",
                                                                   "n_heads", "n_labels")},
            "n_unmapped": mapped_readings["n_unlabelled"] - readings["n_unlabelled"],
            "association_method": "matcher" if judged is None else "judgements",
            "association_judgements": "" if judged is None else str(judgements),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the analyses (rules)


@dataclass(frozen=True)
class AnalysisQuery:
    """What every analysis step gets: the index, the query rows of the image set, the heads (resolved), the
    ``heads.analyses`` settings, the figure paths, the figure title's prefix (the model) and the TEXTSPAN texts
    per head of ``texts: textspan`` (``heads.n_texts``)."""

    index: object
    rows: list[int]
    heads: list[tuple[int, int]]
    settings: Mapping
    figure_paths: Sequence
    title: str
    n_texts: int = 5

    @property
    def size(self) -> int:
        return self.index.model().image_size

    def pictures(self, rows) -> dict[int, np.ndarray]:
        """The model's view (:func:`clip_interp.heads.figures.model_view`) of each image row of ``rows``."""
        paths = self.index.images["path"]
        return {int(row): figures.model_view(paths[int(row)], self.size) for row in sorted(set(rows))}


def property_neighbours_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(a) The property-neighbour table of every query image and configured property of the configured property
    set, and its grid."""
    index, settings = query.index, query.settings
    property_set = query_property_set(index, settings["property_set"])
    properties, skipped = query_properties(index, settings["properties"], property_set)
    if not properties:
        raise InputError(f"none of `heads.analyses.properties` {settings['properties']} has a head of model "
                         f"{index.model_id} in property set {property_set!r} (its properties: "
                         f"{', '.join(set_properties(index, property_set))}); use auto or those")
    table = property_neighbour_table(index, query.rows, properties, settings["k"], property_set,
                                     settings["similarity"])
    pictures = query.pictures([*query.rows, *table["row"]])
    groups = [(f"{image}\n{prop} ({_heads_count(int(part['n_heads'].iloc[0]))})", pictures[row], part)
              for (row, image, prop), part in table.groupby(["query_row", "query_image", "property"], sort=False)]
    figures.neighbour_grid(groups, pictures, query.figure_paths,
                           query.title + f"images nearest by a property's heads ({property_set} groups, "
                           f"{settings['similarity']} of their mean)")
    return table, {"properties": properties, "property_set": property_set, "similarity": settings["similarity"],
                   "skipped": [f"property {p!r} has no head in property set {property_set!r}" for p in skipped]}


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
    texts = query_texts(index, query.settings["texts"], query.heads, query.n_texts)
    table = text_neighbour_table(index, texts, query.heads, query.settings["k"])
    pictures = query.pictures(table["row"])
    groups = [(f"{part['text'].iloc[0]}\n{head_name(int(part['layer'].iloc[0]), int(part['head'].iloc[0]), index)}",
               None, part) for _, part in table.groupby(["text", "layer", "head"], sort=False)]
    figures.neighbour_grid(groups, pictures, query.figure_paths,
                           query.title + "images whose head contribution is nearest a text")
    return table, {}


def topic_maps_step(query: AnalysisQuery) -> tuple[pd.DataFrame, dict]:
    """(b) The topic-map table of every query image, text and map, and its grid."""
    texts = query_texts(query.index, query.settings["texts"], query.heads, query.n_texts)
    table = topic_map_table(query.index, query.rows, texts, query.heads)
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


def run_analysis(analysis: str, index, settings: Mapping, figure_paths, n_texts: int = 5
                 ) -> tuple[pd.DataFrame, dict]:
    """Run ``analysis`` (one of :data:`clip_interp.heads.ANALYSES`) over the configured queries
    (``heads.analyses``; ``n_texts`` TEXTSPAN texts per head with ``texts: textspan``), draw its grid to
    ``figure_paths``, and return its table and the metadata to store with it (queries, skipped properties)."""
    if analysis not in ANALYSIS_STEPS:
        raise InputError(f"unknown analysis {analysis!r}; choose from {ANALYSES}")
    rows = query_rows(settings["images"], index.n)
    heads = query_heads(index, settings["heads"])
    query = AnalysisQuery(index, rows, heads, settings, list(figure_paths), f"{index.model_id}: ", n_texts)
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
    figures.property_layers(layers, layers_figure, "Layers where each property labels heads (L<layer>×<heads>; "
                            "layers numbered from 1, the paper's from 0)")
    return table, layers


def _heads_count(n: int) -> str:
    return f"{n} head" if n == 1 else f"{n} heads"
