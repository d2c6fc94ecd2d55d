"""The OpenAI-compatible gateway in front of vLLM.

Follow one request: `app.py` (the endpoints) -> `proxy.py` (to vLLM and back, timed) -> `sink.py`
(off the request path) -> `recording.py` + `redaction.py` (the event) -> Kafka, or `spool.py` while
Kafka is away. `routing.py` picks the base model or an adapter.
"""
