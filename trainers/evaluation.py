"""The numbers the gate compares, for the candidate and for what serves now, on the same held-out examples.

Loss and perplexity of the target answers (what users wanted), then answers generated greedily and
scored the way the processors score production: ROUGE-L and BLEU against the targets
(`processors.families.feedback.correction_similarity`), toxicity with the configured scorer and refusals
with `processors.text_signals.is_refusal`. `relevance` is how much of the question the answer takes up
(ROUGE-L recall of the user's last turn): a model trained on answers that belong to other questions
learns their style, and can even score a better ROUGE-L against such targets, but stops addressing the
question asked. `answer_metrics` is the pure part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rouge_score import rouge_scorer

from processors.families.feedback import correction_similarity
from processors.text_signals import is_refusal
from trainers.dataset import Example
from trainers.lora import encode, prompt_text

ScoreTexts = Callable[[Sequence[str]], Sequence[float]]
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def relevance(answer: str, question: str) -> float:
    return float(_ROUGE.score(question, answer)["rougeL"].recall)


def answer_metrics(answers: Sequence[str], targets: Sequence[str], questions: Sequence[str],
                   toxicity: Sequence[float], threshold: float) -> dict[str, float]:
    """Means over the examples: ROUGE-L, BLEU (0..1), relevance, toxic and refusal rates, answer length."""
    if not answers:
        return {}
    similarity = [correction_similarity(a, t) for a, t in zip(answers, targets, strict=True)]
    n = len(answers)
    return {
        "rouge_l": sum(s[0] for s in similarity) / n,
        "bleu": sum(s[1] for s in similarity) / n,
        "relevance": sum(relevance(a, q) for a, q in zip(answers, questions, strict=True)) / n,
        "toxic_rate": sum(score >= threshold for score in toxicity) / n,
        "refusal_rate": sum(is_refusal(a) for a in answers) / n,
        "answer_chars_mean": sum(len(a) for a in answers) / n,
        "generated": float(n),
    }


def target_loss(model: Any, tokenizer: Any, examples: Sequence[Example], max_length: int,
                batch_size: int = 8) -> float:
    """Mean negative log-likelihood per answer token (the prompt is context, not scored)."""
    import torch

    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            rows = [encode(tokenizer, e, max_length) for e in examples[start:start + batch_size]]
            width = max(len(r["input_ids"]) for r in rows)
            pad = tokenizer.pad_token_id

            def padded(key: str, value: int, width: int = width, rows: list[dict[str, list[int]]] = rows) -> Any:
                return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows], device=device)

            logits = model(input_ids=padded("input_ids", pad), attention_mask=padded("attention_mask", 0)).logits
            labels = padded("labels", -100)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            tokens += int((labels[:, 1:] != -100).sum())
    return total / max(tokens, 1)


def generate(model: Any, tokenizer: Any, examples: Sequence[Example], max_new_tokens: int,
             batch_size: int = 8) -> list[str]:
    """Greedy answers (deterministic), batched with left padding."""
    import torch

    device = next(model.parameters()).device
    answers: list[str] = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                prompts = [prompt_text(tokenizer, e) for e in examples[start:start + batch_size]]
                batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True,
                                                  clean_up_tokenization_spaces=False)
    finally:
        tokenizer.padding_side = side
    return [a.strip() for a in answers]


def evaluate(model: Any, tokenizer: Any, examples: Sequence[Example], *, score_toxicity: ScoreTexts,
             toxicity_threshold: float, max_new_tokens: int, max_length: int,
             generate_for: int) -> tuple[dict[str, float], list[str]]:
    """Every number for one model on the held-out examples, and its answers to the first `generate_for`."""
    loss = target_loss(model, tokenizer, examples, max_length)
    shown = list(examples[:generate_for])
    answers = generate(model, tokenizer, shown, max_new_tokens)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "examples": float(len(examples))}
    questions = [next((text for role, text in reversed(e.messages) if role == "user"), "") for e in shown]
    metrics |= answer_metrics(answers, [e.target for e in shown], questions, list(score_toxicity(answers)),
                              toxicity_threshold)
    return metrics, answers
