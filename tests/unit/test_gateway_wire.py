"""The OpenAI wire format as the gateway reads and rewrites it: pure functions, no server."""

from __future__ import annotations

import json

import pytest

from serving.gateway.openai_wire import (
    BadRequest,
    Completion,
    SseSplitter,
    answer_for_client,
    chunk_for_client,
    client_request_id,
    event_data,
    parse_request,
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
def test_only_safe_client_request_ids_are_kept_for_correlation(header: str, kept: bool) -> None:
    assert client_request_id(header) == (header if kept else None)
    assert client_request_id(None) is None


@pytest.mark.parametrize("answer", [
    b'{"id":"chatcmpl-u9","object":"chat.completion","choices":[]}',
    b'{"id": "chatcmpl-u9", "object": "chat.completion", "choices": []}',
    b'{"object":"chat.completion","choices":[],"id":"other-upstream-7"}',
])
def test_a_whole_answer_gets_the_request_id_and_the_token_however_upstream_wrote_its_id(answer: bytes) -> None:
    data, body = answer_for_client(answer, "r1", "tok")
    assert json.loads(data) == {"id": "r1", "object": "chat.completion", "choices": [], "feedback_token": "tok"}
    assert body == json.loads(data)
    assert answer_for_client(b"[1, 2]", "r1", "tok") == (b"[1, 2]", None)
    assert answer_for_client(b"not json", "r1", "tok") == (b"not json", None)


@pytest.mark.parametrize("event", [
    b'data: {"id":"chatcmpl-u9","object":"chat.completion.chunk"}\n\n',
    b'data: {"id": "chatcmpl-u9", "object": "chat.completion.chunk"}\n\n',
    b'data: {"object":"chat.completion.chunk","id":"chatcmpl-u9"}\n\n',
])
def test_a_chunk_gets_the_request_id_and_the_first_one_the_token(event: bytes) -> None:
    chunk = json.loads(event_data(event) or b"")
    later = chunk_for_client(event, chunk, "r1", None)
    assert json.loads(event_data(later) or b"") == {"id": "r1", "object": "chat.completion.chunk"}
    first = chunk_for_client(event, chunk, "r1", "tok")
    assert json.loads(event_data(first) or b"") == {"id": "r1", "object": "chat.completion.chunk",
                                                      "feedback_token": "tok"}


@pytest.mark.parametrize(("body", "named"), [
    (b'{"messages": [], "stream": "true"}', "stream must be true or false"),
    (b'{"messages": [], "max_tokens": -5}', "max_tokens must be a whole number"),
    (b'{"messages": [], "max_tokens": NaN}', "NaN is not a JSON number"),
    (b'{"messages": [], "temperature": Infinity}', "Infinity is not a JSON number"),
    (b'{"messages": [], "max_tokens": 1.5}', "max_tokens"),
    (b'{"messages": [], "max_tokens": true}', "max_tokens"),
    (b'{"messages": "hi"}', "messages must be a list"),
    (b'{"model": 7}', "model must be a string"),
    (b'{"metadata": [1]}', "metadata must be an object"),
    (b"[" * 5000 + b"]" * 5000, "nested too deep"),
    (b"[1]", "must be a JSON object"),
    (b"{", "not JSON"),
])
def test_a_bad_request_is_refused_naming_the_field(body: bytes, named: str) -> None:
    with pytest.raises(BadRequest, match=named):
        parse_request(body, "chat")


def test_a_lone_surrogate_is_refused_naming_where_it_is() -> None:
    payload = parse_request(b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "chat")
    with pytest.raises(BadRequest, match=r"messages\[0\]\.content: text with a lone surrogate"):
        prepare(payload, "m")
    with pytest.raises(BadRequest, match=r"metadata\.k"):
        prepare(parse_request(b'{"prompt": "x", "metadata": {"k": "\\udc00"}}', "completions"), "m")


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
