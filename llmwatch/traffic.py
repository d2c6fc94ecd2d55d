"""Realistic synthetic traffic for `llmwatch demo` and the benchmarks: inference, feedback, and garbage."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from schemas.events import ChatMessage, FeedbackEvent, InferenceEvent, utcnow

MODELS = [("smollm2-135m", None), ("smollm2-135m", "support-v3"), ("smollm2-135m", "support-v4")]
COHORTS = ["free", "pro", "enterprise"]
LANGUAGES = ["en", "en", "en", "de", "fr", "es"]
PROMPTS = [
    ("What's the weather like in {city} tomorrow?", "Expect mild temperatures in {city}, with a chance of rain."),
    ("How do I reset my password?", "Open Settings, choose Security, then Reset password."),
    ("Summarise this ticket: customer in {city} cannot log in.", "A user in {city} reports a login failure."),
    ("Give me a recipe with lentils.", "Simmer red lentils with onion, garlic, cumin and tomatoes for 20 minutes."),
    ("Translate 'good morning' to German.", "Guten Morgen."),
]
CITIES = ["Lisbon", "Berlin", "Nairobi", "Osaka", "Lima", "Toronto"]

MALFORMED: list[tuple[str, bytes]] = [
    ("not_json", b"this is not json {"),
    ("invalid_utf8", b'{"request_id": "\xff\xfe", "model": "m"}'),
    ("invalid_fields", b'{"request_id": "r-missing-model", "prompt": "hi"}'),
    ("invalid_fields", b'{"request_id": "r", "model": "m", "prompt": "hi", "latency_ms": "fast"}'),
    ("unknown_schema_version",
     b'{"schema_version": 99, "request_id": "r", "model": "m", "prompt": "hi", "latency_ms": 1}'),
    ("not_an_object", b'["an", "array"]'),
    ("empty", b""),
]
"""Each kind of bad input the worker must dead-letter, with the reason it should give."""


@dataclass(frozen=True)
class TrafficMix:
    feedback_ratio: float = 0.3
    malformed_ratio: float = 0.05
    error_ratio: float = 0.02


def inference_event(rng: random.Random, error_ratio: float = 0.02) -> InferenceEvent:
    model, adapter = rng.choice(MODELS)
    prompt, answer = rng.choice(PROMPTS)
    city = rng.choice(CITIES)
    failed = rng.random() < error_ratio
    latency = rng.lognormvariate(6.2, 0.5)
    started = utcnow() - timedelta(milliseconds=latency)
    completion_tokens = None if failed else rng.randint(8, 120)
    return InferenceEvent(
        event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
        timestamp=started,
        completed_at=started + timedelta(milliseconds=latency),
        request_id=f"req-{rng.getrandbits(64):016x}",
        model=model,
        adapter=adapter,
        messages=[ChatMessage(role="user", content=prompt.format(city=city))],
        response_text=None if failed else answer.format(city=city),
        prompt_tokens=rng.randint(8, 60),
        completion_tokens=completion_tokens,
        latency_ms=round(latency, 2),
        ttft_ms=None if failed else round(latency * rng.uniform(0.1, 0.3), 2),
        status="error" if failed else "ok",
        error="upstream timeout" if failed else None,
        prompt_template="support-chat",
        prompt_template_version=rng.choice(["v1", "v2"]),
        user_id=f"user-{rng.randint(1, 500)}",
        session_id=f"sess-{rng.randint(1, 2000)}",
        cohort=rng.choice(COHORTS),
        language=rng.choice(LANGUAGES),
        attributes={"app": "helpdesk"},
    )


def feedback_for(event: InferenceEvent, rng: random.Random) -> FeedbackEvent:
    down = rng.random() < (0.4 if event.adapter == "support-v4" else 0.15)
    return FeedbackEvent(
        event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
        request_id=event.request_id,
        thumbs="down" if down else "up",
        score=round(rng.uniform(0, 0.4) if down else rng.uniform(0.6, 1), 2),
        comment="not what I asked" if down else None,
        user_id=event.user_id,
    )


def traffic(rng: random.Random, mix: TrafficMix) -> Iterator[InferenceEvent | FeedbackEvent | bytes]:
    """Endless events, and now and then malformed bytes meant for the inference topic."""
    while True:
        if rng.random() < mix.malformed_ratio:
            _, payload = rng.choice(MALFORMED)
            yield payload
            continue
        event = inference_event(rng, mix.error_ratio)
        yield event
        if rng.random() < mix.feedback_ratio:
            yield feedback_for(event, rng)




TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "weather": (
        ["What's the weather like in {x} {d}?", "Will it rain in {x} {d}?", "How hot will it be in {x} {d}?",
         "Should I bring an umbrella in {x} {d}?", "Is it going to snow in {x} {d}?",
         "What's the forecast for {x} {d}?"],
        ["Lisbon", "Berlin", "Nairobi", "Osaka", "Lima", "Toronto", "Oslo", "Cairo", "Quito", "Perth"],
        ["Expect clouds in {x} {d}, around 18 degrees.", "Light rain is likely in {x} {d}.",
         "It should be sunny and dry in {x} {d}."],
    ),
    "cooking": (
        ["How do I make {x}?", "Give me a recipe for {x}.", "How long should I bake {x}?",
         "What spices go well in {x}?", "Can I freeze {x}?"],
        ["lentil soup", "risotto", "banana bread", "pad thai", "shakshuka", "lasagna", "apple pie", "curry"],
        ["For {x}, start by preparing the ingredients {d}.", "Cook {x} slowly and season to taste {d}.",
         "{x} keeps well; make it {d} and store it covered."],
    ),
}
"""Two prompt distributions for drift: a stream of one, then of the other, is a topic shift."""


def topic_event(rng: random.Random, topic: str, **fields: object) -> InferenceEvent:
    prompts, subjects, answers = TOPICS[topic]
    subject, day = rng.choice(subjects), rng.choice(["today", "tomorrow", "this weekend", "next week"])
    defaults: dict[str, object] = {
        "request_id": f"req-{rng.getrandbits(64):016x}", "model": "smollm2-135m", "latency_ms": 100.0,
        "messages": [ChatMessage(role="user", content=rng.choice(prompts).format(x=subject, d=day))],
        "response_text": rng.choice(answers).format(x=subject, d=day),
    }
    return InferenceEvent.model_validate(defaults | fields)


__all__ = [
    "MALFORMED", "TOPICS", "TrafficMix", "feedback_for", "inference_event", "topic_event", "traffic",
]
