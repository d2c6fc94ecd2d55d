"""Detoxify's loading and scoring code, on a small checkpoint built here (its real weights need network)."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from processors.toxicity import DetoxifyScorer, load_toxicity_scorer
from schemas.errors import ConfigurationError
from streams.settings import Metrics

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BertForSequenceClassification]:
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "awful", "idiot", "hello"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,  # type: ignore[call-arg]
                        intermediate_size=32, num_labels=len(CLASSES), max_position_embeddings=64)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    path = folder / "tiny.ckpt"
    torch.save({"config": {"arch": {"args": {"model_type": str(folder), "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": len(CLASSES)}},
                           "dataset": {"args": {"classes": CLASSES}}},
                "state_dict": model.state_dict()}, path)
    return path, folder, model


def test_detoxify_loads_offline_and_scores_like_its_model(checkpoint) -> None:  # type: ignore[no-untyped-def]
    path, folder, model = checkpoint
    scorer = DetoxifyScorer(checkpoint=path, config_dir=folder, batch_size=2)
    texts = ["you are nice", "you are an awful idiot", "hello"]
    scores = scorer.score(texts)
    tokenizer = BertTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = torch.sigmoid(model(**tokenizer(texts, return_tensors="pt", padding=True)).logits)[:, 0]
    assert scores.shape == (3,)
    assert scores.tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_settings_choose_the_backend(checkpoint) -> None:  # type: ignore[no-untyped-def]
    path, folder, _ = checkpoint
    scorer = load_toxicity_scorer(Metrics(toxicity_backend="detoxify", detoxify_checkpoint=path,
                                          detoxify_config_dir=folder))
    assert scorer.name == "detoxify"
    assert load_toxicity_scorer(Metrics()).name == "profanity-check"


def test_a_missing_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        DetoxifyScorer(checkpoint=tmp_path / "missing.ckpt", config_dir=tmp_path)
    message = str(raised.value)
    assert "missing.ckpt" in message
    assert "LLMWATCH_METRICS__DETOXIFY_CHECKPOINT" in message
    assert "LLMWATCH_METRICS__DETOXIFY_CONFIG_DIR" in message
    assert "profanity-check" in message
