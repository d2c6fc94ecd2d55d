"""The OpenAI wire format as the gateway reads and rewrites it: pure functions, no server."""

from __future__ import annotations

import json

import pytest

from serving.gateway.openai_wire import (
    Completion,
    SseSplitter,
    client_request_id,
    event_data,
    id_swap,
    prepare,
)


def test_prepare_routes_takes_metadata_out_and_asks_for_usage_when_streaming() -> None:
    payload = {"model": "support", "messages": [], "stream": True, "metadata": {"cohort": "pro"}, "user": "u-1"}
    upstream = prepare(payload, "support-v4")
    body = json.loads(upstream.body)
    assert body == {"model": "support-v4", "messages": [], "stream": True, "user": "u-1",
                    "stream_options": {"include_usage": True}}
    assert (upstream.stream, upstream.client_wants_usage) == (True, False)
    assert (upstream.metadata, upstream.user) == ({"cohort": "pro"}, "u-1")


def test_prepare_keeps_the_clients_stream_options_and_leaves_non_streaming_alone() -> None:
    upstream = prepare({"stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}, "m")
    assert json.loads(upstream.body)["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert upstream.client_wants_usage
    plain = prepare({"prompt": "Hi", "metadata": "not a map"}, "m")
    assert json.loads(plain.body) == {"prompt": "Hi", "model": "m"}
    assert (plain.stream, plain.metadata) == (False, {})


@pytest.mark.parametrize(("header", "kept"), [
    ("req-42", True), ("a" * 128, True), ("a" * 129, False), ("bad id", False), ('x"y', False), ("", False),
])
def test_only_safe_client_request_ids_are_reused(header: str, kept: bool) -> None:
    assert client_request_id(header) == (header if kept else None)
    assert client_request_id(None) is None


def test_the_id_swap_turns_vllms_id_into_the_request_id() -> None:
    old, new = id_swap("chat", "u9", "r1")
    chunk = b'data: {"id":"chatcmpl-u9","object":"chat.completion.chunk"}\n\n'
    assert chunk.replace(old, new, 1) == b'data: {"id":"r1","object":"chat.completion.chunk"}\n\n'
    assert id_swap("completions", "u9", "r1")[0] == b'"id":"cmpl-u9"'


def test_sse_events_are_split_whatever_the_network_chunks() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\n: comment\n\ndata: [DONE]\n\n'
    for size in (1, 3, 7, len(stream)):
        splitter = SseSplitter()
        events = [e for i in range(0, len(stream), size) for e in splitter.feed(stream[i:i + size])]
        assert events == [b'data: {"a":1}\n\n', b'data: {"b":2}\n\n', b": comment\n\n", b"data: [DONE]\n\n"]
        assert splitter.rest() == b""
    assert [event_data(e) for e in events] == [b'{"a":1}', b'{"b":2}', None, b"[DONE]"]


def test_a_stream_is_read_into_text_usage_and_errors() -> None:
    completion = Completion()
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    assert completion.read_chunk("chat", role) == (False, False)
    assert completion.read_chunk("chat", {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}) == (True, False)
    assert completion.read_chunk("chat", {"choices": [{"index": 0, "delta": {"content": "lo"}}]}) == (True, False)
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    assert completion.read_chunk("chat", usage) == (False, True)
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("Hello", 5, 2)
    completion.read_chunk("chat", {"error": {"message": "boom", "code": 500}})
    assert completion.error == "boom"


def test_completions_and_several_choices_are_read_in_index_order() -> None:
    completion = Completion()
    completion.read_body("completions", {"choices": [{"index": 1, "text": "b"}, {"index": 0, "text": "a"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    assert (completion.text, completion.prompt_tokens) == ("a\nb", 3)
