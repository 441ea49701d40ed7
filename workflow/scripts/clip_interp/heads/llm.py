"""The optional LLM head labeller: in-context learning over an OpenAI-compatible chat-completions endpoint.

Protocol (after CLIP-InterpreT): the model gets a system message, then a few hand-labelled example heads (their
texts as a user turn, ``Label: <property>`` as the assistant's answer; resources/heads/llm_examples.yaml), then the
head to label. Two vocabularies (``heads.llm.vocabulary``):

- ``open`` (the paper's, the default): the system message asks for a short free-form property name; the answer
  is read by :func:`~clip_interp.heads.vocabulary.parse_open_answer` (one line, a few words) and kept as written
  (e.g. ``Timepieces``); the scores read it after :func:`~clip_interp.heads.vocabulary.normalise_free_label`
  and after mapping it onto the taxonomy (:func:`~clip_interp.heads.vocabulary.label_mapping`);
- ``closed``: the system message lists the taxonomy's properties and asks for one of them; the answer is mapped
  onto the taxonomy (:meth:`Taxonomy.canonical`: a property name or alias, after ``Label:`` or as a JSON
  ``{"label": ...}``; failing that, the only property name the answer contains).

An answer that gives no valid label (open: empty, several lines, too long; closed: names no property) is an error
(:class:`LabellerError`) naming the head and the answer; it is not cached, so a re-run asks again.

The endpoint (:class:`ChatEndpoint`) is read from the environment by :meth:`ChatEndpoint.from_environment`:

- ``CLIP_INTERP_LLM_BASE_URL`` (required): the API root, e.g. ``http://127.0.0.1:8080/v1`` for a llama.cpp or
  vLLM server; requests go to ``{base}/chat/completions``;
- ``CLIP_INTERP_LLM_MODEL`` (required): the ``model`` field of the requests;
- ``CLIP_INTERP_LLM_API_KEY`` (optional): sent as ``Authorization: Bearer <key>``; local servers need none;
- ``CLIP_INTERP_LLM_TIMEOUT`` (optional, seconds, default 60) and ``CLIP_INTERP_LLM_RETRIES`` (optional,
  default 3): the timeout of one request, and how often a failed request (connection refused, timeout,
  HTTP 408, 429, 500, 502, 503, 504) is retried, after ``backoff * 2**k`` seconds (1, 2, 4, ...). Other HTTP errors
  (e.g. 401, 404) fail at once.

Answers are cached in a JSON file keyed by the SHA-256 of (model, messages): a re-run with the same model,
taxonomy, examples and texts sends no request. Requests use temperature 0.

The table has the default labeller's columns with labeller ``"llm"``; ``confidence`` is the share of the
head's texts that a :class:`~clip_interp.heads.labels.PropertyMatcher` assigns to the LLM's label (open: to the
label's nearest property by :func:`~clip_interp.heads.vocabulary.label_mapping`) when a matcher is given, else
NaN (the LLM gives no share of its own).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

from ..errors import InputError
from ..io import atomic_path
from .labels import PropertyMatcher, head_texts, label_table
from .taxonomy import Taxonomy, normalise_label
from .vocabulary import MAX_LABEL_WORDS, label_mapping, mapped_labels, parse_open_answer

logger = logging.getLogger(__name__)

ENV_BASE_URL = "CLIP_INTERP_LLM_BASE_URL"
ENV_MODEL = "CLIP_INTERP_LLM_MODEL"
ENV_API_KEY = "CLIP_INTERP_LLM_API_KEY"
ENV_TIMEOUT = "CLIP_INTERP_LLM_TIMEOUT"
ENV_RETRIES = "CLIP_INTERP_LLM_RETRIES"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CACHE_VERSION = 1
VOCABULARIES = ("open", "closed")


class LabellerError(InputError):
    """The LLM labeller could not get, or could not use, an answer (the message says which and how to fix it)."""


@dataclass(frozen=True)
class ChatEndpoint:
    """An OpenAI-compatible chat-completions endpoint: ``{base_url}/chat/completions`` serving ``model``."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_tokens: int = 32

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ChatEndpoint":
        """The endpoint named by the ``CLIP_INTERP_LLM_*`` variables (module docstring); ``overrides`` win."""
        env = os.environ if environ is None else environ
        for name in (ENV_BASE_URL, ENV_MODEL):
            if not env.get(name, "").strip():
                raise LabellerError(f"the LLM labeller needs the environment variable {name} "
                                    f"({ENV_BASE_URL}: the API root such as http://127.0.0.1:8080/v1; "
                                    f"{ENV_MODEL}: the model name the server expects)")
        fields = {"base_url": env[ENV_BASE_URL].strip(), "model": env[ENV_MODEL].strip(),
                  "api_key": env.get(ENV_API_KEY, "").strip() or None}
        for name, key, kind in ((ENV_TIMEOUT, "timeout", float), (ENV_RETRIES, "retries", int)):
            if env.get(name, "").strip():
                try:
                    fields[key] = kind(env[name])
                except ValueError:
                    raise LabellerError(f"environment variable {name}={env[name]!r} is not a {kind.__name__}") from None
        fields.update(overrides)
        return cls(**fields)

    def __post_init__(self):
        if not re.match(r"^https?://", self.base_url):
            raise LabellerError(f"LLM base URL {self.base_url!r} must start with http:// or https:// "
                                f"(set {ENV_BASE_URL})")
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise LabellerError(f"LLM endpoint: timeout ({self.timeout}) must be > 0, retries ({self.retries}) "
                                f"and backoff ({self.backoff}) >= 0")

    def _request(self, messages: list[dict]) -> urllib.request.Request:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LabellerError(f"the chat endpoint {self.url} answered something that is not a chat completion "
                                f"(no choices[0].message.content): {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise LabellerError(f"the chat endpoint {self.url} answered a non-text message content: {content!r}")
        return content

    def complete(self, messages: list[dict]) -> str:
        """The assistant's reply to ``messages``, retrying transient failures (module docstring)."""
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(self._request(messages), timeout=self.timeout) as response:
                    return self._content(response.read())
            except urllib.error.HTTPError as error:
                detail = error.read()[:200]
                if error.code not in RETRY_STATUS:
                    raise LabellerError(f"the chat endpoint {self.url} refused the request: HTTP {error.code} "
                                        f"{error.reason} {detail!r}; check {ENV_MODEL} and {ENV_API_KEY}") from None
                failure = f"HTTP {error.code} {error.reason}"
            except (TimeoutError, socket.timeout):
                failure = f"no answer within the timeout of {self.timeout:g} s"
            except urllib.error.URLError as error:
                if isinstance(error.reason, (TimeoutError, socket.timeout)):
                    failure = f"no answer within the timeout of {self.timeout:g} s"
                else:
                    failure = f"unreachable ({error.reason})"
            except (OSError, http.client.HTTPException) as error:
                failure = f"unreachable or cut off ({type(error).__name__}: {error})"
            logger.warning("chat endpoint %s, try %d of %d: %s", self.url, attempt + 1, self.retries + 1, failure)
        raise LabellerError(f"the chat endpoint {self.url} failed {self.retries + 1} tries, the last: {failure}; "
                            f"check that the server runs and that {ENV_BASE_URL} points at it (or raise "
                            f"{ENV_TIMEOUT} / {ENV_RETRIES})")


# --- examples and prompt ------------------------------------------------------------------------------------

def load_examples(path, taxonomy: Taxonomy) -> list[dict]:
    """The hand-labelled example heads: ``[{"texts": [...], "label": property}]`` from a YAML file with a list
    ``examples`` of mappings ``{texts: [...], label: ...}``; every label must name a property of ``taxonomy``."""
    path = Path(path)
    if not path.is_file():
        raise LabellerError(f"LLM example file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise LabellerError(f"LLM example file {path} is not valid YAML: {error}") from None
    entries = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise LabellerError(f"LLM example file {path} needs a non-empty list under the key 'examples'")
    examples = []
    for i, entry in enumerate(entries):
        key = f"{path}: examples[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"texts", "label"}:
            raise LabellerError(f"{key} must be a mapping with exactly the keys 'texts' and 'label'")
        texts = entry["texts"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise LabellerError(f"{key}.texts must be a non-empty list of non-empty strings")
        label = taxonomy.canonical(entry["label"])
        if label is None:
            raise LabellerError(f"{key}.label {entry['label']!r} names no property of the taxonomy "
                                f"{taxonomy.source} ({', '.join(taxonomy.names)}); use one of them or an alias")
        examples.append({"texts": list(texts), "label": label})
    return examples


def _texts_turn(texts: list[str]) -> str:
    return "Texts:\n" + "\n".join(f"- {t}" for t in texts)


def _system_message(taxonomy: Taxonomy, vocabulary: str) -> str:
    task = ("You label attention heads of a CLIP image encoder. Each head is shown as the texts that best "
            "describe what its output varies with. Name the one property those texts have in common")
    if vocabulary == "closed":
        return (task + ", choosing exactly one of these properties: " + ", ".join(taxonomy.names) + ". "
                "Answer with a single line of the form 'Label: <property>'.")
    return (task + f", as a short name of at most {MAX_LABEL_WORDS} words (for example 'Colours', 'Timepieces' or "
            "'Night scenes'). Answer with a single line of the form 'Label: <property>'.")


def prompt_messages(texts: list[str], examples: list[dict], taxonomy: Taxonomy,
                    vocabulary: str = "open") -> list[dict]:
    """The chat messages that ask for the property of one head with top texts ``texts``: free-form
    (``vocabulary="open"``; the examples' labels shown with spaces for underscores) or one of the taxonomy's
    properties (``"closed"``)."""
    if vocabulary not in VOCABULARIES:
        raise LabellerError(f"unknown LLM vocabulary {vocabulary!r}; choose from {list(VOCABULARIES)}")
    messages = [{"role": "system", "content": _system_message(taxonomy, vocabulary)}]
    for example in examples:
        shown = example["label"] if vocabulary == "closed" else example["label"].replace("_", " ")
        messages.append({"role": "user", "content": _texts_turn(example["texts"])})
        messages.append({"role": "assistant", "content": f"Label: {shown}"})
    messages.append({"role": "user", "content": _texts_turn(texts)})
    return messages


def parse_answer(answer: str, taxonomy: Taxonomy) -> str | None:
    """The taxonomy property an answer names, or None (see the module docstring for the forms accepted)."""
    text = answer.strip()
    candidates = []
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("label"), str):
            candidates.append(parsed["label"])
    except ValueError:
        pass
    match = re.search(r"label\s*[:=]\s*(.+)", text, flags=re.IGNORECASE)
    if match:
        candidates.append(match.group(1).splitlines()[0])
    if text:
        candidates.append(text.splitlines()[0])
    for candidate in candidates:
        found = taxonomy.canonical(candidate.strip().strip(" .,;:!\"'`*"))
        if found is not None:
            return found
    words = f" {normalise_label(re.sub(r'[^A-Za-z0-9_ -]', ' ', text))} "
    named = [name for name in taxonomy.names if f" {normalise_label(name)} " in words]
    return named[0] if len(named) == 1 else None


# --- cache --------------------------------------------------------------------------------------------------

class AnswerCache:
    """Answers on disk keyed by the SHA-256 of (model, messages); written atomically after each new answer."""

    def __init__(self, path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except ValueError:
                data = None
            entries = data.get("entries") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
            if not isinstance(entries, dict) or not all(isinstance(e, dict) and isinstance(e.get("answer"), str)
                                                        for e in entries.values()):
                raise LabellerError(f"LLM answer cache {self.path} is not a cache file of this version; "
                                    "delete it (its answers will be asked again)")
            self.entries = entries

    @staticmethod
    def key(model: str, messages: list[dict]) -> str:
        return hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()

    def get(self, model: str, messages: list[dict]) -> str | None:
        entry = self.entries.get(self.key(model, messages))
        return entry["answer"] if entry else None

    def put(self, model: str, messages: list[dict], answer: str) -> None:
        self.entries[self.key(model, messages)] = {"model": model, "answer": answer}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": self.entries}, indent=1, sort_keys=True))


# --- labeller -----------------------------------------------------------------------------------------------

def _invalid_answer(endpoint: ChatEndpoint, layer: int, head: int, answer: str, taxonomy: Taxonomy,
                    vocabulary: str) -> LabellerError:
    where = f"the answer of {endpoint.model} at {endpoint.url} for head (layer {layer}, head {head})"
    if vocabulary == "closed":
        return LabellerError(f"{where} names no property of the taxonomy {taxonomy.source}: {answer!r}; "
                             f"properties are {', '.join(taxonomy.names)} (try another model or other examples)")
    return LabellerError(f"{where} is not a short one-line property name (at most {MAX_LABEL_WORDS} words, "
                         f"'Label: <property>'): {answer!r} (try another model or other examples)")


def _confidences(labelled: list[tuple], matcher: PropertyMatcher | None, vocabulary: str) -> list[float]:
    """Per head, the share of its texts the matcher assigns to its label's property (module docstring)."""
    if matcher is None:
        return [float("nan")] * len(labelled)
    labels = pd.Series([label for _, _, label, _ in labelled], dtype=object)
    properties = labels if vocabulary == "closed" else mapped_labels(labels, label_mapping(labels, matcher))
    return [matcher.properties(judged).count(prop) / len(judged)
            for (_, _, _, judged), prop in zip(labelled, properties)]


def label_heads_llm(textspan: pd.DataFrame, endpoint: ChatEndpoint, examples: list[dict], n_texts: int,
                    cache_path, taxonomy: Taxonomy, matcher: PropertyMatcher | None = None,
                    vocabulary: str = "open") -> pd.DataFrame:
    """The label table (labeller ``"llm"``) of every head of the TEXTSPAN table, from its first ``n_texts``
    texts, in ``vocabulary`` (module docstring); answers come from the cache at ``cache_path`` when there, else
    from ``endpoint``."""
    cache = AnswerCache(cache_path)
    texts = head_texts(textspan, n_texts)
    labelled, asked = [], 0
    for (layer, head), judged in texts.items():
        messages = prompt_messages(judged, examples, taxonomy, vocabulary)
        answer = cache.get(endpoint.model, messages)
        fresh = answer is None
        if fresh:
            answer = endpoint.complete(messages)
            asked += 1
        label = parse_answer(answer, taxonomy) if vocabulary == "closed" else parse_open_answer(answer)
        if label is None:
            raise _invalid_answer(endpoint, layer, head, answer, taxonomy, vocabulary)
        if fresh:
            cache.put(endpoint.model, messages, answer)
        labelled.append((layer, head, label, judged))
    rows = [{"layer": layer, "head": head, "label": label, "confidence": confidence, "texts": judged,
             "labeller": "llm"}
            for (layer, head, label, judged), confidence in zip(labelled, _confidences(labelled, matcher, vocabulary))]
    logger.info("LLM labeller (%s vocabulary): %d heads, %d requests to %s, %d answers from the cache %s",
                vocabulary, len(rows), asked, endpoint.url, len(rows) - asked, cache.path)
    return label_table(rows)
