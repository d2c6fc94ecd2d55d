"""profanity-check's model scored with numpy alone: the same weights, without importing scikit-learn.

Why: importing scikit-learn to unpickle and run the model was the largest part of a worker's start (~2-3.5 s
of the ~10). The model is a TF-IDF of word tokens and five sigmoid-calibrated linear SVMs whose positive
probabilities are averaged; that is a few lines of arithmetic over the fitted arrays. The package's own
files are read with scikit-learn's classes stood in by plain holders of their pickled state, and what the
arithmetic assumes about them (word unigrams, lowercase, l2 norm, sigmoid calibration, two classes) is
checked at load: a model fitted otherwise raises `UnsupportedModel`, and the caller uses scikit-learn.
tests/unit/test_profanity.py compares the scores with `profanity_check.predict_prob`.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyUnpickler


class UnsupportedModel(Exception):
    """The pickled model is not the one this arithmetic reproduces (a new alt-profanity-check?)."""


class _State:
    """Stands in for a scikit-learn class while unpickling: keeps the object's state, nothing else."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _StandIns(NumpyUnpickler):  # type: ignore[misc]
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "sklearn":
            return type(name, (_State,), {})
        return super().find_class(module, name)


def _load(path: Path) -> Any:
    with path.open("rb") as file:
        return _StandIns(str(path), file, False).load()


def package_data() -> Path:
    """The package's data folder, found without importing the package (its import loads scikit-learn)."""
    spec = importlib.util.find_spec("profanity_check")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedModel("alt-profanity-check is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise UnsupportedModel(f"profanity-check's model differs from the one reproduced here: {what}")


class ProfanityModel:
    """P(profane) per text, as `profanity_check.predict_prob` gives it."""

    def __init__(self, vectorizer: Any, model: Any) -> None:
        params = {k: getattr(vectorizer, k, None) for k in (
            "analyzer", "ngram_range", "lowercase", "strip_accents", "preprocessor", "tokenizer", "binary", "norm",
            "use_idf", "sublinear_tf", "input")}
        _expect(params == {"analyzer": "word", "ngram_range": (1, 1), "lowercase": True, "strip_accents": None,
                           "preprocessor": None, "tokenizer": None, "binary": False, "norm": "l2", "use_idf": True,
                           "sublinear_tf": False, "input": "content"}, f"vectorizer {params}")
        _expect(getattr(model, "method", None) == "sigmoid" and list(model.classes_) == [0, 1], "calibration")
        self._token = re.compile(vectorizer.token_pattern)
        self._vocabulary: dict[str, int] = vectorizer.vocabulary_
        self._idf = np.asarray(vectorizer._tfidf.idf_, dtype=float)
        calibrated = model.calibrated_classifiers_
        _expect(all(len(c.calibrators) == 1 and c.estimator.coef_.shape == (1, len(self._idf)) for c in calibrated),
                "one binary linear classifier per fold")
        self._coef = np.vstack([c.estimator.coef_[0] for c in calibrated])  # (folds, features)
        self._intercept = np.array([float(c.estimator.intercept_[0]) for c in calibrated])
        self._a = np.array([float(c.calibrators[0].a_) for c in calibrated])
        self._b = np.array([float(c.calibrators[0].b_) for c in calibrated])

    @classmethod
    def load(cls, data: Path | None = None) -> ProfanityModel:
        data = data or package_data()
        try:
            return cls(_load(data / "vectorizer.joblib"), _load(data / "model.joblib"))
        except (AttributeError, TypeError, ValueError, OSError) as exc:
            raise UnsupportedModel(f"profanity-check's model could not be read without scikit-learn: {exc}") from exc

    def predict_prob(self, texts: Sequence[str]) -> np.ndarray:
        docs: list[int] = []
        features: list[int] = []
        counts: list[int] = []
        vocabulary, find = self._vocabulary, self._token.findall
        for i, text in enumerate(texts):
            seen: dict[int, int] = {}
            for token in find(text.lower()):
                j = vocabulary.get(token)
                if j is not None:
                    seen[j] = seen.get(j, 0) + 1
            docs += [i] * len(seen)
            features += seen
            counts += seen.values()
        n = len(texts)
        doc, feature = np.asarray(docs, dtype=np.intp), np.asarray(features, dtype=np.intp)
        weights = np.asarray(counts, dtype=float) * self._idf[feature]
        norms = np.sqrt(np.bincount(doc, weights=weights * weights, minlength=n))
        norms[norms == 0] = 1.0  # an empty row stays zero, as scikit-learn's normalize leaves it
        decision = np.vstack([np.bincount(doc, weights=weights * coef[feature], minlength=n) for coef in self._coef])
        decision = decision / norms + self._intercept[:, None]  # (folds, texts)
        probability = 1.0 / (1.0 + np.exp(self._a[:, None] * decision + self._b[:, None]))
        return np.asarray(probability.mean(axis=0))
