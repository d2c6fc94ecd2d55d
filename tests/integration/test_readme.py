"""The README's example and queries run as written, so the documentation cannot drift."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Worker, to_env, wait_until

pytestmark = pytest.mark.integration

README = (Path(__file__).parents[2] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    first = blocks("bash")[0].splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]


def test_the_publishing_example_runs_and_its_events_land(worker: Worker) -> None:
    (example,) = blocks("python")
    result = subprocess.run([sys.executable, "-c", example], env=os.environ | to_env(worker.settings),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: worker.count("SELECT count() FROM inference_events WHERE request_id = 'req-42'") == 1, 60,
               "the README's inference event")
    wait_until(lambda: worker.count("SELECT count() FROM feedback_events WHERE request_id = 'req-42'") == 1, 60,
               "the README's feedback event")


@pytest.mark.parametrize("sql", blocks("sql"), ids=lambda sql: sql.split("\n")[0][:40])
def test_the_queries_run(worker: Worker, sql: str) -> None:
    assert len(blocks("sql")) >= 5
    worker.sql(sql)
