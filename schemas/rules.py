"""Alert rules as SREs write them (YAML), with the semantics of Prometheus alerting rules.

A rule watches one metric point name over windows of one length. Every distinct (model, adapter, prompt
version, labels) that matches its filters is a series of its own, with its own state and fingerprint, so
one rule watches every adapter separately. The evaluation is `processors.alerting.evaluation.evaluate`.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, ValidationError, field_validator, model_validator

from schemas.errors import ConfigurationError

RuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]
Operator = Literal[">", ">=", "<", "<=", "==", "!="]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}


TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


@lru_cache(maxsize=4096)
def _compiled(template: str) -> jinja2.Template:
    return TEMPLATES.from_string(template)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class NoData(_Strict):
    """What a series that stops reporting does once `after_seconds` pass without a point.

    ok: it resolves (if firing) and goes back to ok; keep_last: nothing changes; alerting: it fires
    (as if breached); no_data: it moves to the `no_data` state and says so once with an event.
    """

    mode: Literal["ok", "keep_last", "alerting", "no_data"] = "ok"
    after_seconds: float = Field(default=600, gt=0)


class Webhook(_Strict):
    """POST an Alertmanager-shaped body; with a secret, signed as `X-Llmwatch-Signature: sha256=<hmac>`."""

    url: HttpUrl
    secret: SecretStr | None = None


class Actions(_Strict):
    """Publishing to llm.alerts (and the alerts table) always happens; these are on top of it."""

    webhooks: list[Webhook] = []
    retrain: bool = Field(default=False, description="ask the retraining loop for a new adapter for this model")


class AlertRule(_Strict):
    name: RuleName
    metric: str = Field(min_length=1, description="a metric point name, e.g. latency_p99_ms")
    window_seconds: int = Field(default=60, gt=0, description="judge windows of this length")
    model: str = Field(default="*", description="glob on the model")
    adapter: str = Field(default="*", description="glob on the adapter ('' is the base model)")
    prompt_version: str = Field(default="*", description="glob on the prompt template version")
    match_labels: dict[str, str] = Field(default={}, description="globs on the point's labels")
    op: Operator = ">"
    threshold: float
    warning: float | None = Field(default=None, description="severity warning from here up to the threshold")
    resolve_threshold: float | None = Field(default=None, description="hysteresis: clears only past this")
    for_windows: int = Field(default=1, ge=1, alias="for",
                             description="consecutive breaching windows before firing (pending until then)")
    keep_firing_for: float = Field(default=0, ge=0, description="seconds to stay firing after it clears")
    min_requests: int = Field(default=0, ge=0, description="windows with fewer requests behind them are not judged")
    no_data: NoData = NoData()
    severity: Literal["info", "warning", "critical"] = "critical"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = Field(default={}, description="templates: {{ value }}, {{ labels.model }} ...")
    actions: Actions = Actions()

    @field_validator("threshold", "warning", "resolve_threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("annotations")
    @classmethod
    def _templates_parse(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key, template in annotations.items():
            try:
                TEMPLATES.parse(template)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"annotation {key!r} is not a valid template: {exc.message}") from exc
        return annotations

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        """Annotations with `{{ value }}`, `{{ threshold }}`, `{{ labels.model }}` ... filled in."""
        rendered = {}
        for key, template in self.annotations.items():
            try:
                rendered[key] = _compiled(template).render(context)
            except jinja2.TemplateError as exc:
                rendered[key] = f"{template} (not rendered: {exc})"
        return rendered

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Self:
        """A warning must trip before the threshold, and hysteresis must sit on the side that is ok."""
        if self.op in ("==", "!="):
            if self.warning is not None or self.resolve_threshold is not None:
                raise ValueError(f"`warning` and `resolve_threshold` need an ordering operator, not {self.op}")
            return self
        above = self.op in (">", ">=")
        for name in ("warning", "resolve_threshold"):
            value = getattr(self, name)
            if value is not None and (value > self.threshold if above else value < self.threshold):
                side = "at or below" if above else "at or above"
                raise ValueError(f"`{name}` ({value}) must be {side} the threshold ({self.threshold}) for op {self.op}")
        return self

    def arms(self, value: float) -> bool:
        """The condition to leave ok: the warning level if there is one, else the threshold."""
        return COMPARE[self.op](value, self.threshold if self.warning is None else self.warning)

    def holds(self, value: float) -> bool:
        """The condition to stay pending or firing: hysteresis lets it clear only past resolve_threshold."""
        level = self.resolve_threshold if self.resolve_threshold is not None else (
            self.threshold if self.warning is None else self.warning)
        return COMPARE[self.op](value, level)

    def severity_of(self, value: float) -> str:
        return self.severity if COMPARE[self.op](value, self.threshold) else "warning"


class RulesFile(_Strict):
    rules: list[AlertRule] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique: {', '.join(repeated)} appear more than once")
        return self


class RulesError(ConfigurationError):
    """A rules file that cannot be used; `problems` holds one line per error, with rule name and line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s) in the alert rules:\n  " + "\n  ".join(problems))


def _lines(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Where each mapping key and sequence item starts (1-based), by its path in the document."""
    found = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found |= _lines(value, (*path, key.value))
            found[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found |= _lines(item, (*path, index))
    return found


def parse_rules(text: str, path: str = "<rules>") -> RulesFile:
    """Parse and validate a rules file, or raise RulesError naming each rule and line at fault."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise RulesError(path, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if data is None:
        data = {}
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, Mapping):
        raise RulesError(path, ["line 1: expected a mapping with a `rules:` list"])
    lines = _lines(node) if node is not None else {}
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        found = data.get("rules")
        rules: list[Any] = found if isinstance(found, list) else []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            name = ""
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(rules):
                rule = rules[loc[1]]
                name = f"rule {rule.get('name', f'#{loc[1] + 1}')!s}" if isinstance(rule, Mapping) else ""
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
            field = ".".join(str(part) for part in (loc[2:] if name else loc))
            message = error["msg"].removeprefix("Value error, ")
            where = ", ".join(part for part in (f"line {line}" if line else "", name) if part)
            problems.append(": ".join(part for part in (where, field, message) if part))
        raise RulesError(path, problems) from exc


def load_rules(path: Path) -> RulesFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(str(path), [f"cannot read it: {exc.strerror}"]) from exc
    return parse_rules(text, str(path))


def fingerprint(rule: str, series: Mapping[str, str]) -> str:
    """Stable across processes and restarts: the rule's name and the series' labels, sorted."""
    text = rule + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(series.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
