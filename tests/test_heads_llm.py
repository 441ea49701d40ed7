"""The LLM labeller against a local chat-completions server started by the test (canned answers)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import torch

from clip_interp.heads.labels import LABEL_COLUMNS, PropertyMatcher
from clip_interp.heads.llm import (
    AnswerCache,
    ChatEndpoint,
    LabellerError,
    label_heads_llm,
    load_examples,
    parse_answer,
    prompt_messages,
)
from clip_interp.heads.taxonomy import Taxonomy, load_taxonomy

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = Taxonomy({"colours": ("red", "blue"), "shapes": ("circle", "square"),
                     "time_of_day_and_season": ("at night",)}, {"colours": ("Colors",)})
EXAMPLES = [{"texts": ["crimson", "teal"], "label": "colours"}, {"texts": ["a cube", "a ring"], "label": "shapes"}]


class ChatServer:
    """A chat-completions server on 127.0.0.1 that plays a script of replies, one per request:
    ``("answer", text)``, ``("status", code)``, ``("sleep", seconds, text)`` or ``("raw", bytes)``."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "authorization": self.headers.get("Authorization")})
                step = server.script.pop(0) if server.script else ("status", 599)
                if step[0] == "sleep":
                    time.sleep(step[1])
                    step = ("answer", step[2])
                if step[0] == "status":
                    self.send_response(step[1])
                    self.end_headers()
                    self.wfile.write(b'{"error": "canned failure"}')
                    return
                payload = step[1] if step[0] == "raw" else json.dumps(
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": step[1]}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    servers = []

    def start(script):
        servers.append(ChatServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def textspan(heads):
    return pd.DataFrame([{"layer": layer, "head": h, "rank": r + 1, "text": t}
                         for (layer, h), texts in heads.items() for r, t in enumerate(texts)])


HEADS = {(3, 0): ["red", "blue", "red circle"], (3, 1): ["circle", "square", "blue"]}


def endpoint(server, **overrides):
    settings = {"timeout": 5.0, "retries": 2, "backoff": 0.01, **overrides}
    return ChatEndpoint(server.base_url if hasattr(server, "base_url") else server, "canned-model", **settings)


def test_labels_then_cache_hit_sends_no_request(chat_server, tmp_path):
    server = chat_server([("answer", "Label: colours"), ("answer", "label: Shapes.")])
    cache = tmp_path / "cache" / "answers.json"
    first = label_heads_llm(textspan(HEADS), endpoint(server, api_key="secret"), EXAMPLES, 3, cache, TAXONOMY,
                            vocabulary="closed")
    assert list(first.columns) == LABEL_COLUMNS
    assert first["label"].tolist() == ["colours", "shapes"] and set(first["labeller"]) == {"llm"}
    assert first["confidence"].isna().all() and first["texts"].tolist() == list(HEADS.values())
    assert len(server.requests) == 2
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["authorization"] == "Bearer secret"
    assert request["body"]["model"] == "canned-model" and request["body"]["temperature"] == 0
    messages = request["body"]["messages"]
    assert messages == prompt_messages(HEADS[(3, 0)], EXAMPLES, TAXONOMY, vocabulary="closed")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "colours, shapes, time_of_day_and_season" in messages[0]["content"]
    assert messages[2]["content"] == "Label: colours" and "- red circle" in messages[-1]["content"]

    again = label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, cache, TAXONOMY, vocabulary="closed")
    assert len(server.requests) == 2  # every answer came from the cache
    pd.testing.assert_frame_equal(first, again)
    # another model (or another prompt) is another cache key
    with pytest.raises(LabellerError):
        label_heads_llm(textspan(HEADS), ChatEndpoint(server.base_url, "other-model", retries=0), EXAMPLES, 3,
                        cache, TAXONOMY, vocabulary="closed")
    assert len(server.requests) == 3


def test_confidence_from_a_matcher(chat_server, tmp_path):
    def encode(texts):
        return torch.tensor([[float("red" in t or "blue" in t), float("circle" in t or "square" in t), 0.1]
                             for t in texts])

    server = chat_server([("answer", '{"label": "Colors"}'), ("answer", "The texts are about shapes")])
    table = label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, tmp_path / "c.json", TAXONOMY,
                            matcher=PropertyMatcher(encode, TAXONOMY), vocabulary="closed")
    assert table["label"].tolist() == ["colours", "shapes"]
    assert table["confidence"].tolist() == pytest.approx([3 / 3, 2 / 3])


def test_http_500_then_success_is_retried(chat_server, tmp_path):
    server = chat_server([("status", 500), ("status", 503), ("answer", "Label: colours")])
    table = label_heads_llm(textspan({(3, 0): HEADS[(3, 0)]}), endpoint(server), EXAMPLES, 3, tmp_path / "c.json",
                            TAXONOMY, vocabulary="closed")
    assert table["label"].tolist() == ["colours"] and len(server.requests) == 3


def test_timeout_is_retried_then_reported(chat_server, tmp_path):
    server = chat_server([("sleep", 0.6, "Label: colours")] * 2)
    with pytest.raises(LabellerError, match=r"chat endpoint http://127.0.0.1:\d+/v1/chat/completions failed 2 "
                                            r"tries, the last: no answer within the timeout of 0.2 s"):
        label_heads_llm(textspan({(3, 0): HEADS[(3, 0)]}), endpoint(server, timeout=0.2, retries=1), EXAMPLES, 3,
                        tmp_path / "c.json", TAXONOMY, vocabulary="closed")
    assert len(server.requests) == 2 and not (tmp_path / "c.json").exists()


def test_timeout_then_success(chat_server, tmp_path):
    server = chat_server([("sleep", 0.6, "Label: shapes"), ("answer", "Label: colours")])
    table = label_heads_llm(textspan({(3, 0): HEADS[(3, 0)]}), endpoint(server, timeout=0.2), EXAMPLES, 3,
                            tmp_path / "c.json", TAXONOMY, vocabulary="closed")
    assert table["label"].tolist() == ["colours"]


def test_unreachable_endpoint_names_the_url(tmp_path):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LabellerError, match=rf"{url}/chat/completions failed 3 tries, the last: unreachable .*"
                                            r"CLIP_INTERP_LLM_BASE_URL"):
        label_heads_llm(textspan(HEADS), endpoint(url), EXAMPLES, 3, tmp_path / "c.json", TAXONOMY, vocabulary="closed")


def test_client_error_is_not_retried(chat_server, tmp_path):
    server = chat_server([("status", 401)])
    with pytest.raises(LabellerError, match="refused the request: HTTP 401"):
        label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, tmp_path / "c.json", TAXONOMY,
                        vocabulary="closed")
    assert len(server.requests) == 1


def test_unparseable_answer_is_an_error_and_not_cached(chat_server, tmp_path):
    server = chat_server([("answer", "Label: colours"), ("answer", "I cannot tell, maybe colours or shapes?")])
    cache = tmp_path / "c.json"
    with pytest.raises(LabellerError, match=r"answer of canned-model .* for head \(layer 3, head 1\) names no "
                                            r"property .*'I cannot tell, maybe colours or shapes\?'"):
        label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, cache, TAXONOMY, vocabulary="closed")
    assert len(AnswerCache(cache).entries) == 1  # the first head's good answer is kept


def test_malformed_completion_is_an_error(chat_server, tmp_path):
    server = chat_server([("raw", b"<html>not json</html>")])
    with pytest.raises(LabellerError, match="not a chat completion"):
        label_heads_llm(textspan(HEADS), endpoint(server), EXAMPLES, 3, tmp_path / "c.json", TAXONOMY,
                        vocabulary="closed")


def test_corrupt_cache_file(tmp_path):
    cache = tmp_path / "c.json"
    for text in ("{not json", '{"version": 99, "entries": {}}', '{"version": 1, "entries": {"k": {"x": 1}}}'):
        cache.write_text(text)
        with pytest.raises(LabellerError, match=r"c.json is not a cache file of this version; delete it"):
            AnswerCache(cache)


@pytest.mark.parametrize("answer, expected", [
    ("Label: colours", "colours"), ("colours", "colours"), ("**Label:** Colors", "colours"),
    ('{"label": "shapes"}', "shapes"), ("Label: time of day and season", "time_of_day_and_season"),
    ("The common property is shapes.", "shapes"), ("Label: animals", None), ("colours and shapes", None), ("", None),
])
def test_parse_answer(answer, expected):
    assert parse_answer(answer, TAXONOMY) == expected


def test_endpoint_from_environment():
    env = {"CLIP_INTERP_LLM_BASE_URL": "http://127.0.0.1:8080/v1/", "CLIP_INTERP_LLM_MODEL": "m",
           "CLIP_INTERP_LLM_TIMEOUT": "7.5", "CLIP_INTERP_LLM_RETRIES": "1"}
    chat = ChatEndpoint.from_environment(env)
    assert chat.url == "http://127.0.0.1:8080/v1/chat/completions"
    assert (chat.model, chat.api_key, chat.timeout, chat.retries) == ("m", None, 7.5, 1)
    with pytest.raises(LabellerError, match="CLIP_INTERP_LLM_MODEL"):
        ChatEndpoint.from_environment({"CLIP_INTERP_LLM_BASE_URL": "http://x/v1"})
    with pytest.raises(LabellerError, match="CLIP_INTERP_LLM_TIMEOUT='soon' is not a float"):
        ChatEndpoint.from_environment({**env, "CLIP_INTERP_LLM_TIMEOUT": "soon"})
    with pytest.raises(LabellerError, match="must start with http"):
        ChatEndpoint.from_environment({**env, "CLIP_INTERP_LLM_BASE_URL": "localhost:8080"})


def test_example_file(tmp_path):
    taxonomy = load_taxonomy(REPO / "resources" / "heads" / "taxonomy.yaml")
    examples = load_examples(REPO / "resources" / "heads" / "llm_examples.yaml", taxonomy)
    assert len(examples) == 5 and len({e["label"] for e in examples}) == 5
    assert all(len(e["texts"]) == 5 for e in examples)
    bad = tmp_path / "examples.yaml"
    bad.write_text("examples:\n  - texts: [a, b]\n    label: Subject\n")
    with pytest.raises(LabellerError, match=r"examples.yaml: examples\[0\].label 'Subject' names no property"):
        load_examples(bad, taxonomy)
    bad.write_text("examples:\n  - texts: a\n    label: colours\n")
    with pytest.raises(LabellerError, match=r"examples\[0\].texts must be a non-empty list"):
        load_examples(bad, taxonomy)
    bad.write_text("heads: []\n")
    with pytest.raises(LabellerError, match="under the key 'examples'"):
        load_examples(bad, taxonomy)
