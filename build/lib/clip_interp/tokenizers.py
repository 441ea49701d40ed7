"""One tokenizer interface over open_clip's and Hugging Face's CLIP BPE tokenizers.

``encode(text)`` returns the ids of a single sentence *with* the start-of-text and
end-of-text tokens and *without* padding; ``pad`` turns lists of ids into a padded
``LongTensor`` the model accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass
class ClipTokenizer:
    """Backend-neutral view of a CLIP BPE tokenizer."""

    encode_fn: Callable[[str], list[int]]
    token_str_fn: Callable[[int], str]
    sot_id: int
    eot_id: int
    pad_id: int
    context_length: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: SOT, the BPE tokens, EOT (no padding)."""
        ids = [self.sot_id, *self.encode_fn(text), self.eot_id]
        if len(ids) > self.context_length:
            raise ValueError(
                f"text {text!r} has {len(ids)} tokens, more than the model's context length "
                f"{self.context_length}"
            )
        return ids

    def token_str(self, token_id: int) -> str:
        """The readable form of one token, without the end-of-word marker."""
        return self.token_str_fn(int(token_id))

    def tokens(self, text: str) -> list[str]:
        return [self.token_str(i) for i in self.encode(text)]

    def pad(self, sequences: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
        """Right-pad id sequences to ``length`` (default: the longest) with the pad id."""
        length = length or max(len(s) for s in sequences)
        out = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            out[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        return out

    def __call__(self, texts: Sequence[str], length: int | None = None) -> torch.Tensor:
        return self.pad([self.encode(t) for t in texts], length)


def _strip_word_marker(token: str) -> str:
    return token.replace("</w>", "")


def from_open_clip(tokenizer) -> ClipTokenizer:
    """Wrap ``open_clip.get_tokenizer(name)`` (a ``SimpleTokenizer``)."""
    inner = getattr(tokenizer, "tokenizer", tokenizer)
    if not hasattr(inner, "encoder") or not hasattr(inner, "decoder"):
        raise TypeError(
            f"unsupported open_clip tokenizer {type(tokenizer).__name__}: only the CLIP BPE "
            "SimpleTokenizer is supported"
        )
    return ClipTokenizer(
        encode_fn=inner.encode,
        token_str_fn=lambda i: _strip_word_marker(inner.decoder[i]),
        sot_id=inner.sot_token_id,
        eot_id=inner.eot_token_id,
        pad_id=0,
        context_length=getattr(tokenizer, "context_length", 77),
    )


def from_hf(tokenizer, context_length: int = 77) -> ClipTokenizer:
    """Wrap a Hugging Face ``CLIPTokenizer``/``CLIPTokenizerFast``."""
    return ClipTokenizer(
        encode_fn=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
        token_str_fn=lambda i: _strip_word_marker(tokenizer.convert_ids_to_tokens(i)),
        sot_id=tokenizer.bos_token_id,
        eot_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        context_length=min(context_length, tokenizer.model_max_length or context_length),
    )


def default_tokenizer() -> ClipTokenizer:
    """open_clip's bundled CLIP BPE tokenizer (no download needed)."""
    import open_clip

    return from_open_clip(open_clip.get_tokenizer("ViT-B-32"))
