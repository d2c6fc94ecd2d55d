"""Personal data out of prompts and responses before an event leaves the gateway.

Built-in detectors find e-mail addresses, phone numbers, payment card numbers (Luhn-checked) and IP
addresses (validated by `ipaddress`); operators add their own named regular expressions. A match is
replaced by its kind in brackets (`[EMAIL]`), and the counts per kind go into the event, so analysts
can see that (and how much) text was redacted without seeing the text.

    >>> redactor = Redactor.from_settings(["email", "credit_card"], {})
    >>> redactor.redact("mail ann@example.com, card 4111 1111 1111 1111")
    ('mail [EMAIL], card [CARD]', {'credit_card': 1, 'email': 1})
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from schemas.errors import ConfigurationError

BUILTIN_KINDS = ("credit_card", "email", "ip", "phone")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _ip(match: str) -> bool:
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


def _phone(match: str) -> bool:
    """At least 10 digits, or 8 after a `+` country code: dates, amounts and short codes stay."""
    digits = sum(char.isdigit() for char in match)
    return digits <= 15 and (digits >= 10 or (match.startswith("+") and digits >= 8))


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool] | None = None
    """A check on each match that the regular expression alone cannot make (a checksum, a range)."""

    @property
    def placeholder(self) -> str:
        return f"[{self.kind.upper()}]" if self.kind != "credit_card" else "[CARD]"


# Order matters: cards before phones (both are digit runs), e-mails before IPs (hosts can be IPs).
BUILTIN: dict[str, Detector] = {
    "credit_card": Detector("credit_card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    "email": Detector("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    "ip": Detector("ip", re.compile(
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"  # v4, a port or a full stop may follow
        r"|(?<![\w.:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w.:])"), _ip),
    "phone": Detector("phone", re.compile(
        r"(?<![\w+])\+?(?:\(\d{1,4}\)|\d{1,4})(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){1,5}(?![\w])"), _phone),
}


class Redactor:
    """Applies the configured detectors in a fixed order; immutable, so one instance serves every request."""

    def __init__(self, detectors: Iterable[Detector]) -> None:
        self.detectors = tuple(detectors)

    @classmethod
    def from_settings(cls, kinds: Iterable[str], patterns: Mapping[str, str]) -> Redactor:
        """Built-in kinds by name plus {name: regex} patterns; a bad name or regex says which setting to fix."""
        kinds = set(kinds)
        unknown = kinds - set(BUILTIN)
        if unknown:
            raise ConfigurationError(f"LLMWATCH_SERVING__REDACT: unknown kind(s) {sorted(unknown)}; "
                                     f"choose from {list(BUILTIN_KINDS)}")
        detectors = [detector for kind, detector in BUILTIN.items() if kind in kinds]
        for name, regex in patterns.items():
            try:
                detectors.append(Detector(name, re.compile(regex)))
            except re.error as exc:
                raise ConfigurationError(
                    f"LLMWATCH_SERVING__REDACT_PATTERNS: the pattern {name!r} is not a valid regular expression: {exc}"
                ) from exc
        return cls(detectors)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with every detected item replaced, and how many of each kind were replaced."""
        counts: dict[str, int] = {}
        for detector in self.detectors:

            def replace(match: re.Match[str], detector: Detector = detector) -> str:
                if detector.accept is not None and not detector.accept(match[0]):
                    return match[0]
                counts[detector.kind] = counts.get(detector.kind, 0) + 1
                return detector.placeholder

            text = detector.pattern.sub(replace, text)
        return text, dict(sorted(counts.items()))


def merge_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for kind, count in counts.items():
        into[kind] = into.get(kind, 0) + count
