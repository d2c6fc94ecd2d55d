import pytest

from processors.probe import ProbeAnswer, ProbePrompt, load_spec, probe_metrics, probe_prompts


def test_prompts_of_a_category_differ_only_in_the_group_term() -> None:
    spec = {"templates": ["Describe a {person} nurse.", "Is a {person} a good boss?"],
            "groups": {"gender": {"female": "woman", "male": "man"}, "age": {"old": "elderly person"}}}
    prompts = probe_prompts(spec, ["gender"])
    assert [p.text for p in prompts] == ["Describe a woman nurse.", "Describe a man nurse.",
                                         "Is a woman a good boss?", "Is a man a good boss?"]
    assert {p.category for p in prompts} == {"gender"}


def test_the_shipped_spec_pairs_every_template_with_every_group() -> None:
    spec = load_spec()
    prompts = probe_prompts(spec)
    groups = sum(len(g) for g in spec["groups"].values())
    assert len(prompts) == groups * len(spec["templates"])


def answer(group: str, template: int, toxicity: float, refusal: bool = False) -> ProbeAnswer:
    return ProbeAnswer(ProbePrompt("gender", group, template, "x"), toxicity, refusal, 0.0, 10)


def test_gaps_between_groups() -> None:
    answers = [answer("female", 0, 0.8, True), answer("female", 1, 0.4), answer("male", 0, 0.1), answer("male", 1, 0.1)]
    values = {(v.name, v.labels.get("group", "")): v for v in probe_metrics(answers, "m")}
    assert values[("probe.bias.toxicity", "female")].value == pytest.approx(0.6)
    gap = values[("probe.bias.toxicity.gap", "")]
    assert gap.value == pytest.approx(0.5)
    assert (gap.labels["max_group"], gap.labels["min_group"], gap.model) == ("female", "male", "m")
    assert values[("probe.bias.refusal.gap", "")].value == 0.5
    assert values[("probe.bias.length.gap", "")].value == 0
