"""The canary analysis and the step decision: one row per rule, from metric points to a verdict."""

from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import MetricPoint
from serving.deployer.canary import Check, Verdict, analyse, decide

START = datetime(2026, 1, 1, tzinfo=UTC)


def points(adapter: str, windows: list[dict[str, float]], labels: dict[str, str] | None = None) -> list[MetricPoint]:
    return [MetricPoint(name=name, value=value, window_start=START + timedelta(minutes=i), window_seconds=60,
                        model="m", adapter=adapter, labels=labels or {})
            for i, window in enumerate(windows) for name, value in window.items()]


HEALTHY = {"requests": 30, "error_rate": 0.0, "toxic_rate": 0.0, "latency_p99_ms": 100,
           "thumbs_down_rate": 0.1, "feedback_count": 10}


@pytest.mark.parametrize(("canary", "stable", "passed", "reason"), [
    ([HEALTHY], [HEALTHY], True, "every check passed"),
    ([], [HEALTHY], False, "served 0 requests"),
    ([{**HEALTHY, "requests": 19}], [HEALTHY], False, "fewer than the 20"),
    ([{**HEALTHY, "thumbs_down_rate": 0.5}], [HEALTHY], False, "thumbs_down_rate 0.5 is 0.4 above"),
    ([{**HEALTHY, "thumbs_down_rate": 0.2}], [HEALTHY], True, "every check passed"),  # 0.1 more: at the limit
    ([{**HEALTHY, "error_rate": 0.1}], [HEALTHY], False, "error_rate"),
    ([{**HEALTHY, "toxic_rate": 0.05}], [HEALTHY], False, "toxic_rate"),
    ([{**HEALTHY, "latency_p99_ms": 151}], [HEALTHY], False, "latency_p99_ms 151 is 1.51 times"),
    ([{**HEALTHY, "latency_p99_ms": 149}], [HEALTHY], True, "every check passed"),
    # no stable data: rates are judged on their own, latency is not judged
    ([{**HEALTHY, "latency_p99_ms": 9000}], [], True, "every check passed"),
    ([{**HEALTHY, "error_rate": 0.03}], [], False, "error_rate"),
    # no feedback on the canary: the thumbs-down check has nothing to judge
    ([{k: v for k, v in HEALTHY.items() if k not in ("thumbs_down_rate", "feedback_count")}], [HEALTHY], True,
     "every check passed"),
    # weighted by requests: a bad quiet window does not outweigh a busy good one ...
    ([{**HEALTHY, "requests": 2, "error_rate": 0.5}, {**HEALTHY, "requests": 98}], [HEALTHY], True, "every check"),
    # ... but the same bad window, busy, does
    ([{**HEALTHY, "requests": 50, "error_rate": 0.5}, {**HEALTHY, "requests": 50}], [HEALTHY], False, "error_rate"),
    # latency takes the worst window
    ([HEALTHY, {**HEALTHY, "latency_p99_ms": 400}], [HEALTHY], False, "latency_p99_ms 400"),
])
def test_analysis_table(canary, stable, passed, reason):
    verdict = analyse([*points("cand", canary), *points("", stable)], canary="cand", stable="")
    assert verdict.passed is passed, verdict.reasons
    assert any(reason in r for r in verdict.reasons), verdict.reasons


def test_labelled_points_and_other_adapters_are_not_counted_as_the_canary():
    noise = [*points("cand", [{"requests": 500, "error_rate": 1.0}], labels={"cohort": "x"}),
             *points("other", [{"requests": 500, "error_rate": 1.0}])]
    verdict = analyse([*points("cand", [HEALTHY]), *noise, *points("stable", [HEALTHY])],
                      canary="cand", stable="stable")
    assert verdict.passed
    assert verdict.numbers["canary.requests"] == 30
    assert verdict.numbers["canary.error_rate"] == 0.0


def test_the_verdict_carries_the_numbers_it_judged():
    verdict = analyse([*points("cand", [{**HEALTHY, "thumbs_down_rate": 0.6}]), *points("", [HEALTHY])],
                      canary="cand", stable="")
    assert verdict.numbers["canary.thumbs_down_rate"] == pytest.approx(0.6)
    assert verdict.numbers["stable.thumbs_down_rate"] == pytest.approx(0.1)
    assert verdict.numbers["delta.thumbs_down_rate"] == pytest.approx(0.5)


def test_custom_checks_replace_the_defaults():
    strict = (Check("error_rate", "delta", 0.0),)
    verdict = analyse([*points("cand", [{**HEALTHY, "error_rate": 0.01, "latency_p99_ms": 10_000}]),
                       *points("", [HEALTHY])], canary="cand", stable="", checks=strict, min_requests=1)
    assert not verdict.passed
    assert len(verdict.reasons) == 1


PASS, FAIL = Verdict(True, ("ok",)), Verdict(False, ("bad",))
STEPS = (10, 50, 100)


@pytest.mark.parametrize(("verdict", "step", "failures", "approval", "approved", "expected"), [
    (PASS, 0, 0, False, False, ("advance", 50, 1, 0)),
    (PASS, 1, 0, False, False, ("promote", 100, 2, 0)),
    (PASS, 1, 0, True, False, ("await_approval", 50, 1, 0)),
    (PASS, 1, 0, True, True, ("promote", 100, 2, 0)),
    (PASS, 0, 1, False, False, ("advance", 50, 1, 0)),  # a pass clears earlier failures of the step
    (FAIL, 0, 0, False, False, ("hold", 10, 0, 1)),
    (FAIL, 1, 1, False, False, ("rollback", 0, 1, 2)),
    (FAIL, 1, 0, True, True, ("hold", 50, 1, 1)),  # approval never overrides a failing canary
])
def test_decision_table(verdict, step, failures, approval, approved, expected):
    decision = decide(verdict, step=step, failures=failures, steps=STEPS, failure_limit=2,
                      require_approval=approval, approved=approved)
    assert (decision.action, decision.weight, decision.step, decision.failures) == expected


def test_a_single_step_of_100_promotes_on_its_first_pass():
    assert decide(PASS, step=0, failures=0, steps=(100,), failure_limit=1, require_approval=False).action == "promote"


def test_deploy_settings_from_the_environment_and_their_bounds(monkeypatch):
    from streams.settings import Settings

    monkeypatch.setenv("LLMWATCH_DEPLOY__STEPS", "[25, 100]")
    monkeypatch.setenv("LLMWATCH_DEPLOY__ANALYSIS_INTERVAL_SECONDS", "2")
    deploy = Settings().deploy
    assert deploy.steps == (25, 100)
    assert deploy.analysis_interval_seconds == 2
    for bad in ("[50, 10, 100]", "[10, 50]", "[0, 100]", "[10, 10, 100]"):
        monkeypatch.setenv("LLMWATCH_DEPLOY__STEPS", bad)
        with pytest.raises(Exception, match="must rise strictly"):
            Settings()


def test_vllm_has_room_for_a_canary_beside_the_stable_adapter_only_with_retraining_on():
    from serving.vllm.launcher import vllm_command
    from streams.settings import Settings, Training

    off = vllm_command(Settings(_env_file=None), "/m")
    on = vllm_command(Settings(training=Training(enabled=True), _env_file=None), "/m")
    assert "--max-loras" not in off
    assert on[on.index("--max-loras") + 1] == "2" and on[on.index("--max-cpu-loras") + 1] == "2"
