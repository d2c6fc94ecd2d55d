import numpy as np
import pytest
from profanity_check import predict_prob
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from processors.profanity import ProfanityModel, UnsupportedModel, package_data
from processors.toxicity import ProfanityCheckScorer

TEXTS = [
    "What is the weather in Paris today?",
    "you are a stupid idiot and this is shit",
    "Fuck off, damn it!!",
    "",
    "the and of a an is",  # stop words only: an empty row
    "ÉCOLE Straße naïve résumé — ünïcödé wörds",
    "Go to hell, you bastard. HELL HELL hell",
    "1234 56 x y z",
    "A nice, polite answer about shipping times and refunds." * 20,
]


def test_scores_equal_scikit_learns() -> None:
    ours = ProfanityModel.load().predict_prob(TEXTS)
    np.testing.assert_allclose(ours, predict_prob(TEXTS), rtol=0, atol=1e-9)
    assert ours[1] > 0.5 > ours[0]


def test_the_vocabulary_holds_no_stop_words_so_dropping_unknown_tokens_drops_them() -> None:
    from profanity_check.profanity_check import vectorizer

    assert not set(vectorizer.vocabulary_) & ENGLISH_STOP_WORDS


def test_no_texts_no_scores() -> None:
    assert ProfanityModel.load().predict_prob([]).shape == (0,)


def test_a_model_fitted_otherwise_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from processors import profanity

    real = profanity._load

    def bigrams(path):  # type: ignore[no-untyped-def]
        found = real(path)
        if path.name == "vectorizer.joblib":
            found.ngram_range = (1, 2)
        return found

    monkeypatch.setattr(profanity, "_load", bigrams)
    with pytest.raises(UnsupportedModel, match="ngram_range"):
        ProfanityModel.load(package_data())
    scorer = ProfanityCheckScorer()
    assert scorer._predict_prob is predict_prob
    np.testing.assert_allclose(scorer.score(TEXTS[:3]), predict_prob(TEXTS[:3]), atol=1e-9)
