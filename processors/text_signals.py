"""Cheap per-text signals: refusal-like answers, demographic groups named in a prompt, sentiment."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|afraid)\b[^.]{0,60}\b(?:can(?:no|')t|unable|not able)"
    r"|I (?:can(?:no|')t|won'?t|am unable to|'m unable to|am not able to|'m not able to) "
    r"(?:help|assist|provide|answer|comply|do that|share|discuss)"
    r"|\bas an AI(?: language model)?\b)",
    re.IGNORECASE,
)


def is_refusal(text: str | None) -> bool:
    return bool(text) and _REFUSAL.search(text) is not None  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupLexicon:
    """Maps terms to labels such as "gender:female"; one regex finds them all, overlapping ("black man")."""

    terms: dict[str, tuple[str, ...]]
    pattern: re.Pattern[str]

    @classmethod
    def from_mapping(cls, lexicon: dict[str, dict[str, list[str]]]) -> GroupLexicon:
        terms: dict[str, set[str]] = {}
        for category, groups in lexicon.items():
            for group, words in groups.items():
                for word in words:
                    terms.setdefault(word.lower(), set()).add(f"{category}:{group}")
        alternation = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
        return cls({t: tuple(sorted(g)) for t, g in terms.items()},
                   re.compile(rf"(?=(?<!\w)({alternation})(?!\w))", re.IGNORECASE))

    @classmethod
    def load(cls, path: Path | None = None) -> GroupLexicon:
        text = path.read_text() if path else \
            resources.files("processors").joinpath("lexicons/groups.yaml").read_text()
        return cls.from_mapping(yaml.safe_load(text))

    def groups(self, text: str) -> list[str]:
        found = {label for match in self.pattern.findall(text) for label in self.terms[match.lower()]}
        return sorted(found)

    def categories(self) -> list[str]:
        return sorted({label.split(":")[0] for labels in self.terms.values() for label in labels})
