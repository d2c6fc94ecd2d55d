"""Rules files: what SREs write is checked with the rule name and line of every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.alerting.engine import DEFAULT_RULES
from schemas.rules import RulesError, fingerprint, load_rules, parse_rules


def test_the_shipped_rules_parse() -> None:
    names = [rule.name for rule in load_rules(DEFAULT_RULES).rules]
    assert {"latency_p99_high", "error_rate_high", "toxic_rate_high", "drift_detected",
            "thumbs_down_high"} <= set(names)


def test_every_error_names_its_rule_and_line() -> None:
    text = """rules:
  - name: ok_rule
    metric: error_rate
    threshold: 0.1
  - name: bad_warning
    metric: latency_p99_ms
    threshold: 100
    warning: 500
  - name: typo
    metric: toxic_rate
    thresold: 0.2
"""
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.yaml")
    problems = caught.value.problems
    assert any(p.startswith("line 5, rule bad_warning") and "warning" in p for p in problems), problems
    assert any(p.startswith("line 9, rule typo: threshold") and "required" in p for p in problems), problems
    assert any(p.startswith("line 11, rule typo: thresold") for p in problems), problems
    assert "rules.yaml" in str(caught.value)


@pytest.mark.parametrize(("text", "needle"), [
    ("rules: [", "not valid YAML"),
    ("- 3", "rules"),
    ("rules:\n  - {name: a, metric: m, threshold: .inf}", "finite"),
    ("rules:\n  - {name: a, metric: m, threshold: 1}\n  - {name: a, metric: n, threshold: 2}", "unique"),
    ("rules:\n  - {name: a, metric: m, threshold: 1, annotations: {s: '{{ value '}}", "template"),
    ("rules:\n  - {name: 'has space', metric: m, threshold: 1}", "name"),
    ("rules:\n  - {name: a, metric: m, threshold: 1, op: '==', warning: 0}", "ordering operator"),
])
def test_invalid_files_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    assert needle in str(caught.value)


def test_an_empty_file_has_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing yet\n")
    assert load_rules(path).rules == []


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read it"):
        load_rules(tmp_path / "nope.yaml")


def test_fingerprints_are_stable_and_per_series() -> None:
    a = fingerprint("p99", {"model": "m", "adapter": "a"})
    assert a == fingerprint("p99", {"adapter": "a", "model": "m"})
    assert a != fingerprint("p99", {"model": "m", "adapter": "b"}) != fingerprint("other", {"model": "m"})
    assert a == "a5b4bd1c4ff6b5b5" or len(a) == 16
