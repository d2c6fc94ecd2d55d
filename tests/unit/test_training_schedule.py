"""One run at a time; alerts during a run give at most one follow-up per model; duplicates do nothing."""

from __future__ import annotations

from trainers.schedule import Schedule


def test_alerts_during_a_run_coalesce_into_one_follow_up_per_model() -> None:
    schedule: Schedule[str] = Schedule()
    assert schedule.offer("a1", "m", "run-1").decision == "start"
    wait = schedule.offer("a2", "m", "run-2")
    assert (wait.decision, wait.into) == ("wait", "run-1")
    for alert in ("a3", "a4"):
        offer = schedule.offer(alert, "m", f"run-{alert}")
        assert (offer.decision, offer.into) == ("coalesced", "run-2")
    assert schedule.offer("b1", "other", "run-b").decision == "wait"
    assert schedule.finished() == "run-2"
    assert schedule.offer("a5", "m", "run-5").decision == "wait"  # run-2 started: a new follow-up may wait
    assert schedule.finished() == "run-b"
    assert schedule.finished() == "run-5"
    assert schedule.finished() is None and schedule.idle


def test_the_same_alert_never_counts_twice() -> None:
    schedule: Schedule[str] = Schedule()
    assert schedule.offer("a1", "m", "run-1").decision == "start"
    assert schedule.offer("a1", "m", "run-again").decision == "duplicate"
    assert schedule.finished() is None
    assert schedule.offer("a1", "m", "run-later").decision == "duplicate"
