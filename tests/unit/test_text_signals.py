import random
from pathlib import Path

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from llmwatch.traffic import inference_event
from processors.embedding import TokenBucket
from processors.scoring import SCORE_COLUMNS, Scorers, scored_rows
from processors.text_signals import GroupLexicon, is_refusal
from processors.toxicity import ProfanityCheckScorer
from schemas import InferenceEvent
from schemas.events import ScoredInferenceEvent
from schemas.tables import columns, to_rows


@pytest.mark.parametrize("text", ["I'm sorry, but I can't help with that.", "I cannot provide that information.",
                                  "As an AI language model, I have no opinions."])
def test_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", ["Sure! Preheat the oven.", "Sorry for the wait: here is the recipe.", None, ""])
def test_not_refusals(text: str | None) -> None:
    assert not is_refusal(text)


def test_lexicon_finds_whole_words_and_multiword_terms() -> None:
    lexicon = GroupLexicon.load()
    assert lexicon.groups("Is this fair to elderly Muslim women and a black man?") == [
        "age:old", "gender:female", "gender:male", "race_ethnicity:black", "religion:muslim"]
    assert lexicon.groups("The manager mentioned a blackboard") == []
    assert "nationality" in lexicon.categories()


def test_a_custom_lexicon_file(tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text("region:\n  north: [northerner]\n  south: [southerner]\n")
    assert GroupLexicon.load(path).groups("A Southerner asks") == ["region:south"]


def test_scores_are_stored_with_every_field_of_the_event() -> None:
    scorers = Scorers(ProfanityCheckScorer(), 0.5, GroupLexicon.load(), SentimentIntensityAnalyzer())
    clean = inference_event(random.Random(1))
    toxic = InferenceEvent(request_id="r", model="m", latency_ms=1, prompt="why are women like this",
                           response_text="You are a stupid fucking idiot.")
    no_answer = InferenceEvent(request_id="r2", model="m", latency_ms=1, prompt="hi", status="error")
    rows = scored_rows([clean, toxic, no_answer], scorers)
    fields = len(columns(InferenceEvent))
    assert [row[:fields] for row in rows] == to_rows([clean, toxic, no_answer])
    scores = [dict(zip(SCORE_COLUMNS, row[fields:], strict=True)) for row in rows]
    assert not scores[0]["toxic"] and scores[1]["toxic"]
    assert scores[1]["response_toxicity"] > 0.9
    assert scores[1]["groups"] == ["gender:female"]
    assert scores[1]["sentiment"] < 0
    assert scores[2]["response_toxicity"] is None and scores[2]["sentiment"] is None
    ScoredInferenceEvent.model_validate(dict(zip(columns(ScoredInferenceEvent), rows[1], strict=True)))


def test_prompt_text_of_a_chat_is_its_user_turns() -> None:
    event = InferenceEvent(request_id="r", model="m", latency_ms=1, messages=[
        {"role": "system", "content": "be nice"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert event.prompt_text == "a\nb"


def test_token_bucket_admits_the_rate_and_a_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=20, clock=lambda: now[0])
    assert bucket.take(50) == 20
    now[0] = 1.0
    assert bucket.take(50) == 10
    assert bucket.take(5) == 0


def test_lexicon_words_in_any_case_and_a_long_s_are_found() -> None:
    lexicon = GroupLexicon.load()
    assert lexicon.groups("NON-BINARY and ASIANſ readers") == ["gender:nonbinary", "race_ethnicity:asian"]
    assert lexicon.groups("Non-binaryish, manly, blackness") == []
    custom = GroupLexicon.from_mapping({"x": {"y": ["-dash term", "café"]}})
    assert custom.first_words is None
    assert custom.groups("a -dash term and a CAFÉ") == ["x:y"]


def test_a_sentiment_sample_scores_the_same_events_each_time() -> None:
    events = [inference_event(random.Random(n)) for n in range(200)]
    answered = [e.response_text is not None for e in events]
    sentiment = SCORE_COLUMNS.index("sentiment") - len(SCORE_COLUMNS)

    def scored(share: float) -> list[bool]:
        scorers = Scorers(ProfanityCheckScorer(), 0.5, GroupLexicon.load(), SentimentIntensityAnalyzer(),
                          sentiment_sample=share)
        return [row[sentiment] is not None for row in scored_rows(events, scorers)]

    assert scored(1.0) == answered
    half = scored(0.5)
    assert half == scored(0.5)
    assert 0.3 < sum(half) / sum(answered) < 0.7
    assert all(a for a, h in zip(answered, half, strict=True) if h)


def test_the_heap_trimmer_returns_freed_memory_to_the_os_where_glibc_has_it() -> None:
    import ctypes

    from processors.embedding import heap_trimmer

    trim = heap_trimmer()
    glibc = getattr(ctypes.CDLL(None), "malloc_trim", None) is not None
    assert trim() in ((0, 1) if glibc else (None,))
