"""Per-event scores given at ingest and stored with the inference row: toxicity, refusal, sentiment, groups.

Rows are built directly (the event's row plus the score columns): constructing a second pydantic
object per event cost more than all the scoring together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from processors.pricing import PriceBook, cost
from processors.text_signals import GroupLexicon, is_refusal
from processors.toxicity import ToxicityScorer
from schemas.events import InferenceEvent, ScoredInferenceEvent
from schemas.tables import columns, to_rows


@dataclass(frozen=True)
class Scorers:
    toxicity: ToxicityScorer
    toxicity_threshold: float
    lexicon: GroupLexicon
    sentiment: SentimentIntensityAnalyzer
    prices: PriceBook = field(default_factory=PriceBook)
    sentiment_sample: float = 1.0
    """Share of answered events given a sentiment score: VADER is the dearest score per event."""


SCORE_COLUMNS = ["prompt_toxicity", "response_toxicity", "toxic", "refusal", "sentiment", "groups", "prompt_length",
                 "cost_input", "cost_output", "cost_total", "price_version"]
assert columns(ScoredInferenceEvent) == columns(InferenceEvent) + SCORE_COLUMNS


_SAMPLE_SCALE = 10_000


def scored_rows(events: Sequence[InferenceEvent], scorers: Scorers) -> list[list[Any]]:
    """Rows of `ScoredInferenceEvent`; one vectorised toxicity call for the whole batch."""
    prompts = [e.prompt_text for e in events]
    answered = [i for i, e in enumerate(events) if e.response_text]
    toxicity = scorers.toxicity.score(prompts + [events[i].response_text or "" for i in answered])
    response_toxicity: dict[int, float] = dict(zip(answered, toxicity[len(prompts):].tolist(), strict=True))
    rows = to_rows(events)
    sentiment, sample = scorers.sentiment.polarity_scores, round(scorers.sentiment_sample * _SAMPLE_SCALE)
    for i, (event, row) in enumerate(zip(events, rows, strict=True)):
        prompt_tox = float(toxicity[i])
        response_tox = response_toxicity.get(i)
        row += [
            prompt_tox,
            response_tox,
            max(prompt_tox, response_tox or 0.0) >= scorers.toxicity_threshold,
            is_refusal(event.response_text),
            sentiment(event.response_text)["compound"]
            if event.response_text and (sample >= _SAMPLE_SCALE or event.event_id.int % _SAMPLE_SCALE < sample)
            else None,
            scorers.lexicon.groups(prompts[i]),
            len(prompts[i]),
            *_cost_columns(event, scorers.prices),
        ]
    return rows


def _cost_columns(event: InferenceEvent, prices: PriceBook) -> list[Any]:
    price = prices.price(event.model, event.adapter)
    if price is None or event.prompt_tokens is None and event.completion_tokens is None:
        return [None, None, None, ""]
    spent = cost(price, event.prompt_tokens or 0, event.completion_tokens or 0, event.cached_prompt_tokens or 0)
    return [spent.input, spent.output, spent.total, spent.version]
