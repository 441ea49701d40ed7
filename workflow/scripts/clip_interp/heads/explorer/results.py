"""The explorer's result containers and the tables it shows: neighbour rankings with their galleries, a model's
overview, its head cards and scores."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import pictures


@dataclass(frozen=True)
class Neighbours:
    """A ranking of the image set: ``table`` (rank, image key, score, row of the image set), a gallery of
    ``(thumbnail, caption)`` pairs in rank order, and a one-line summary."""

    table: pd.DataFrame
    gallery: list[tuple[object, str]]
    summary: str


@dataclass(frozen=True)
class ModelOverview:
    """What the page shows when a model is chosen."""

    head_choices: list[tuple[str, str]]  # (menu text with the head's label, value "layer:head")
    labellers: list[str]
    labeller: str
    properties: list[str]
    image_choices: list[str]
    scores: pd.DataFrame
    head_cards: pd.DataFrame
    summary: str
    property_sets: list[tuple[str, str]]  # (menu text, value: a labeller or "app")
    property_set: str                     # the default: the app's groups where the model has them


def score_text(score: float) -> str:
    """A score as a caption shows it: three decimals (a cosine), or three significant digits below 0.01 (the dot
    product of head contributions, which are divided by the embedding's norm, can be that small)."""
    return f"{score:.3f}" if score == 0 or abs(score) >= 0.01 else f"{score:.2e}"


def neighbours_with_gallery(table: pd.DataFrame, summary: str) -> Neighbours:
    """A neighbour table with its gallery: the thumbnail of each row's image, captioned with rank and score.

    The ranking reads the index, so an image file that cannot be read any more keeps its place: a grey square
    captioned "file unreadable", counted in the summary."""
    gallery, unreadable = [], 0
    for row in table.itertuples():
        caption = f"#{row.rank} · {score_text(row.score)} · {row.image}"
        picture = pictures.thumbnail(row.path)
        if picture is None:
            picture, caption = pictures.unreadable_thumbnail(), caption + " (file unreadable)"
            unreadable += 1
        gallery.append((picture, caption))
    if unreadable:
        summary += f" ({unreadable} of their files cannot be read; see the server log)"
    shown = table[["rank", "image", "score", "row"]].reset_index(drop=True)
    shown["score"] = [float(f"{score:.4g}") for score in shown["score"]]  # dot products can be small: 4 digits
    return Neighbours(shown, gallery, summary)


def head_cards(index, labeller: str | None = None) -> pd.DataFrame:
    """A labeller's label table (``layer, head, label, confidence, texts, labeller``; default: the index's default
    labeller) by layer and head."""
    return index.label_table(labeller).sort_values(["layer", "head"], kind="stable").reset_index(drop=True)


def model_scores(index) -> pd.DataFrame:
    """The model's score table (empty when the workflow wrote none)."""
    return index.scores if index.scores is not None else pd.DataFrame()


def textspan_list(index, layer: int, head: int, judged) -> str:
    """The head's TEXTSPAN texts as a numbered Markdown list with their variance shares (the label table's judged
    texts when the TEXTSPAN table has no row for the head)."""
    table = index.textspan
    rows = table[(table["layer"] == layer) & (table["head"] == head)].sort_values("rank")
    if rows.empty:
        return "\n".join(f"{i}. {t}" for i, t in enumerate(judged, start=1))
    return "\n".join(f"{int(r.rank)}. {r.text} ({r.share:.1%})" for r in rows.itertuples())
