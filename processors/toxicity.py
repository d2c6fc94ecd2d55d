"""Toxicity scores in [0, 1], from one of two back ends behind one interface.

profanity-check (alt-profanity-check) ships its model and runs offline and fast: the default.
Detoxify is the stronger model where its weights can be had; `checkpoint` and `config_dir` let it
load from local files only, with no download.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from schemas.errors import ConfigurationError

log = logging.getLogger(__name__)


class ToxicityScorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


class ProfanityCheckScorer:
    """profanity-check's model, scored with numpy (`processors.profanity`): scikit-learn only if that cannot read it."""

    name = "profanity-check"

    def __init__(self) -> None:
        from processors.profanity import ProfanityModel, UnsupportedModel

        try:
            self._predict_prob = ProfanityModel.load().predict_prob
        except UnsupportedModel as exc:
            log.warning("%s; scoring with scikit-learn instead (a slower start)", exc)
            from profanity_check import predict_prob

            self._predict_prob = predict_prob

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return np.asarray(self._predict_prob(list(texts)), dtype=float)


class DetoxifyScorer:
    name = "detoxify"

    def __init__(self, model_type: str = "original", *, checkpoint: Path | None = None,
                 config_dir: Path | None = None, batch_size: int = 64) -> None:
        from detoxify import Detoxify

        self.batch_size = batch_size
        try:
            self._model = Detoxify(
                model_type,
                checkpoint=str(checkpoint) if checkpoint else None,
                device="cpu",
                huggingface_config_path=str(config_dir) if config_dir else None,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigurationError(
                f"Detoxify could not load ({exc}). Without network access set LLMWATCH_METRICS__DETOXIFY_CHECKPOINT "
                "and LLMWATCH_METRICS__DETOXIFY_CONFIG_DIR to local files, or use the profanity-check back end"
            ) from exc

    def score(self, texts: Sequence[str]) -> np.ndarray:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            result = self._model.predict(chunk)["toxicity"]
            scores.extend(result if isinstance(result, list) else [result])
        return np.asarray(scores, dtype=float)


class ToxicityChoice(Protocol):
    """Which back end, and where Detoxify's offline files are (the metrics settings have these fields)."""

    @property
    def toxicity_backend(self) -> str: ...
    @property
    def detoxify_model(self) -> str: ...
    @property
    def detoxify_checkpoint(self) -> Path | None: ...
    @property
    def detoxify_config_dir(self) -> Path | None: ...


def load_toxicity_scorer(settings: ToxicityChoice) -> ToxicityScorer:
    if settings.toxicity_backend == "detoxify":
        return DetoxifyScorer(settings.detoxify_model, checkpoint=settings.detoxify_checkpoint,
                              config_dir=settings.detoxify_config_dir)
    return ProfanityCheckScorer()
