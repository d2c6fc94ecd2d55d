"""Personal data out of prompts, responses, metadata and feedback before an event leaves the gateway.

Built-in detectors find e-mail addresses (international ones too), phone numbers, payment card numbers
(Luhn-checked) and IP addresses (validated by `ipaddress`); operators add their own named regular
expressions. A match is replaced by its kind in brackets (`[EMAIL]`), and the counts per kind go into
the event, so analysts can see that (and how much) text was redacted without seeing the text.

Every pattern, the operators' too, is compiled by RE2 (google-re2): its matching time is linear in the
text, so no input can make redaction backtrack (with Python's `re`, a prompt of 120,000 letters once
held the gateway for 16 s). RE2 has no look-around; what a look-around would say (a card number is not
the middle of a longer digit run, an IP is not part of a version string) is checked on each match in
Python, in constant time. Presidio was weighed and not taken: its analyzer needs spaCy, and its own
patterns backtrack.

    >>> redactor = Redactor.from_settings(["email", "credit_card"], {})
    >>> redactor.redact("mail ann@example.com, card 4111 1111 1111 1111")
    ('mail [EMAIL], card [CARD]', {'credit_card': 1, 'email': 1})
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

from schemas.errors import ConfigurationError

BUILTIN_KINDS = ("credit_card", "email", "ip", "phone")

_SPACES = "\u00a0\u2007\u202f\u2009"
"""Non-breaking, figure, narrow and thin spaces: what word processors and chat apps put between digit groups."""


def _before(text: str, start: int) -> str:
    return text[start - 1] if start > 0 else ""


def _after(text: str, end: int) -> str:
    return text[end] if end < len(text) else ""


def _wordlike(char: str) -> bool:
    return char.isalnum() or char == "_"


def _one_of(char: str, chars: str) -> bool:
    return bool(char) and char in chars


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card(text: str, start: int, end: int) -> bool:
    """13 to 19 digits that pass Luhn, not a slice of a longer number."""
    before, after = _before(text, start), _after(text, end)
    if before.isdigit() or _one_of(before, "-.") or after.isdigit() or after == "-":
        return False
    digits = "".join(char for char in text[start:end] if char.isdigit())
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _ip(text: str, start: int, end: int) -> bool:
    before, after = _before(text, start), _after(text, end)
    if _wordlike(before) or _one_of(before, ".:"):
        return False
    if _wordlike(after) or (after == ":" and ":" in text[start:end]):  # a port may follow a v4 address only
        return False
    if after == "." and _after(text, end + 1).isdigit():  # 1.2.3.4.5 is a version, not an address
        return False
    try:
        ipaddress.ip_address(text[start:end])
    except ValueError:
        return False
    return True


def _groups(number: str) -> list[str]:
    groups, current = [], []
    for char in number:
        if char.isdigit():
            current.append(char)
        elif current:
            groups.append("".join(current))
            current = []
    if current:
        groups.append("".join(current))
    return groups


def _phone(text: str, start: int, end: int, number: str) -> bool:
    """A number as people write phone numbers: grouped, 10 to 15 digits (8 after a `+` country code).

    What only looks like one stays: a bare run of digits (an order or an id), a dotted quad (an address,
    even one `ipaddress` refuses), a number ending in a one-digit group (an ISBN's check digit), a date.
    """
    before, after = _before(text, start), _after(text, end)
    if _wordlike(before) or _one_of(before, "+＋.-") or _wordlike(after):
        return False
    groups = _groups(number)
    digits = sum(map(len, groups))
    international = number[0] in "+＋"
    if not (10 <= digits <= 15 or (international and 8 <= digits <= 15)):
        return False
    if len(groups) == 1 and not international and "(" not in number:
        return False
    if len(groups) == 4 and all(len(group) <= 3 for group in groups) and "." in number:
        return False
    if len(groups[-1]) == 1:
        return False
    return not (len(groups) >= 3 and len(groups[0]) == 4 and len(groups[1]) == len(groups[2]) == 2
                and number[4] in "-/.")


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: Any
    """An RE2 pattern (`re2.compile`): linear in the text it scans."""
    accept: Callable[[str, int, int, str], bool] | None = None
    """A check on each match that the pattern cannot make (a checksum, a range, what stands before and after
    it): given the text, the match's start and end, and its first group (or the match, without groups)."""

    @property
    def placeholder(self) -> str:
        return f"[{self.kind.upper()}]" if self.kind != "credit_card" else "[CARD]"


_DIGIT = r"\p{Nd}"
_SEPARATOR = rf"[ {_SPACES}.\-–/]"
_GROUP = rf"(?:\({_DIGIT}{{1,4}}\)|{_DIGIT}{{1,4}})"

# Order matters: cards before phones (both are digit runs), e-mails before IPs (hosts can be IPs).
BUILTIN: dict[str, Detector] = {
    "credit_card": Detector(
        "credit_card", re2.compile(rf"{_DIGIT}(?:[ {_SPACES}.\-]?{_DIGIT}){{12,18}}"),
        lambda text, start, end, _: _card(text, start, end)),
    "email": Detector("email", re2.compile(
        r"[\p{L}\p{N}\p{M}._%+\-]+[@＠﹫][\p{L}\p{N}\p{M}\-]+(?:[.．。｡][\p{L}\p{N}\p{M}\-]+)*"
        r"[.．。｡](?:\p{L}[\p{L}\p{M}]+|xn--[a-zA-Z0-9\-]+)")),
    "ip": Detector("ip", re2.compile(
        r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"),
        lambda text, start, end, _: _ip(text, start, end)),
    "phone": Detector("phone", re2.compile(
        rf"([+＋]?{_GROUP}(?:{_SEPARATOR}{{0,2}}{_GROUP}){{1,7}})"
        rf"(?:[ {_SPACES}]{{0,2}}(?i:ext\.?|extension|x|#)[ {_SPACES}]{{0,2}}{_DIGIT}{{1,6}})?"), _phone),
}


def compile_pattern(name: str, regex: str) -> Any:
    """An operator's pattern in RE2; one RE2 cannot run names the setting to fix."""
    try:
        return re2.compile(regex)
    except re2.error as exc:
        message = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ConfigurationError(
            f"LLMWATCH_SERVING__REDACT_PATTERNS: the pattern {name!r} is not a regular expression RE2 can run "
            f"({message}); RE2 has no look-around or back-references, so that matching stays linear in the text"
        ) from None


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
        detectors += [Detector(name, compile_pattern(name, regex)) for name, regex in patterns.items()]
        return cls(detectors)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with every detected item replaced, and how many of each kind were replaced."""
        counts: dict[str, int] = {}
        for detector in self.detectors:
            pieces: list[str] = []
            done = 0
            for match in detector.pattern.finditer(text):
                start, end = match.span()
                if start == end:
                    continue
                if detector.accept is not None and not detector.accept(text, start, end, match.group(1)
                                                                       if detector.pattern.groups else match.group()):
                    continue
                pieces += [text[done:start], detector.placeholder]
                done = end
                counts[detector.kind] = counts.get(detector.kind, 0) + 1
            if pieces:
                text = "".join(pieces) + text[done:]
        return text, dict(sorted(counts.items()))


def merge_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for kind, count in counts.items():
        into[kind] = into.get(kind, 0) + count
