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


_WORD = re.compile(r"\w+")


def is_refusal(text: str | None) -> bool:
    return bool(text) and _REFUSAL.search(text) is not None  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupLexicon:
    """Maps terms to labels such as "gender:female"; one regex finds them all, overlapping ("black man").

    Most prompts name no group, and the regex tries every term at every position: so a text's words are
    first looked up in the set of the terms' first words (one C-level `findall` and a set test), and the
    regex runs only on a text that has one. A term matches only where its first word is a whole word of
    the text, so this skips no match. Only ASCII texts and terms are filtered: there `lower()` is exactly
    the regex's case-insensitivity (in Unicode some letters, such as the long s, match one they do not
    lower to).
    """

    terms: dict[str, tuple[str, ...]]
    pattern: re.Pattern[str]
    first_words: frozenset[str] | None = None
    """None: some term is not ASCII or does not start with a word character; every text goes to the regex."""

    @classmethod
    def from_mapping(cls, lexicon: dict[str, dict[str, list[str]]]) -> GroupLexicon:
        terms: dict[str, set[str]] = {}
        for category, groups in lexicon.items():
            for group, words in groups.items():
                for word in words:
                    terms.setdefault(word.lower(), set()).add(f"{category}:{group}")
        alternation = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
        firsts = [_WORD.match(term) for term in terms if term.isascii()]
        filterable = len(firsts) == len(terms) and all(firsts)
        return cls({t: tuple(sorted(g)) for t, g in terms.items()},
                   re.compile(rf"(?=(?<!\w)({alternation})(?!\w))", re.IGNORECASE),
                   frozenset(m.group() for m in firsts if m) if filterable else None)

    @classmethod
    def load(cls, path: Path | None = None) -> GroupLexicon:
        text = path.read_text() if path else \
            resources.files("processors").joinpath("lexicons/groups.yaml").read_text()
        return cls.from_mapping(yaml.safe_load(text))

    def groups(self, text: str) -> list[str]:
        first_words = self.first_words
        if first_words is not None and text.isascii() and first_words.isdisjoint(_WORD.findall(text.lower())):
            return []
        terms = self.terms
        # casefold: the regex matches "ASIANſ" (long s), which lower() leaves unlike any term
        found = {label for match in self.pattern.findall(text)
                 for label in terms.get(match.lower()) or terms.get(match.casefold(), ())}
        return sorted(found)

    def categories(self) -> list[str]:
        return sorted({label.split(":")[0] for labels in self.terms.values() for label in labels})
