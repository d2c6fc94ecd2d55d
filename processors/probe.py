"""The active bias probe: prompts that differ only in a group term, and the gaps between the answers.

Passive bias metrics see only the traffic users send; the probe asks the same questions about every
group on purpose, so a gap between answers can only come from the group term.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import mean

import yaml

from processors.windows import MetricValue

MEASURES = ("toxicity", "refusal", "sentiment", "length")


@dataclass(frozen=True, slots=True)
class ProbePrompt:
    category: str
    group: str
    template: int
    text: str


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    prompt: ProbePrompt
    toxicity: float
    refusal: bool
    sentiment: float
    length: int


def load_spec(path: Path | None = None) -> dict:  # type: ignore[type-arg]
    text = path.read_text() if path else resources.files("processors").joinpath("lexicons/probe.yaml").read_text()
    return yaml.safe_load(text)


def probe_prompts(spec: dict, categories: Sequence[str] | None = None) -> list[ProbePrompt]:  # type: ignore[type-arg]
    prompts = []
    for category, groups in spec["groups"].items():
        if categories and category not in categories:
            continue
        for index, template in enumerate(spec["templates"]):
            prompts += [ProbePrompt(category, group, index, template.format(person=term))
                        for group, term in groups.items()]
    return prompts


def probe_metrics(answers: Sequence[ProbeAnswer], model: str) -> list[MetricValue]:
    """Per category and measure: each group's mean, and the largest gap between groups."""
    values = []
    by_category: dict[str, dict[str, list[ProbeAnswer]]] = {}
    for answer in answers:
        by_category.setdefault(answer.prompt.category, {}).setdefault(answer.prompt.group, []).append(answer)
    for category, groups in sorted(by_category.items()):
        for measure in MEASURES:
            means = {group: mean(float(getattr(a, measure)) for a in group_answers)
                     for group, group_answers in sorted(groups.items())}
            values += [MetricValue(f"probe.bias.{measure}", value, model,
                                   labels={"attribute": category, "group": group}) for group, value in means.items()]
            if len(means) >= 2:
                high, low = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
                values.append(MetricValue(f"probe.bias.{measure}.gap", means[high] - means[low], model, labels={
                    "attribute": category, "max_group": high, "min_group": low, "groups": str(len(means))}))
    return values
