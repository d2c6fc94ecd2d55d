"""The base install is the SDK: publishing events must not pull in torch, Faust, vLLM or the store engine."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

HEAVY = ("torch", "faust", "vllm", "chdb", "transformers", "sentence_transformers", "evidently", "fastapi",
         "peft", "aiokafka", "pandas", "numpy")
ROOT = Path(__file__).resolve().parents[2]


def test_publishing_imports_nothing_heavy() -> None:
    code = ("import sys; from schemas import InferenceEvent, FeedbackEvent; from streams.publisher import Publisher; "
            "from streams.settings import Settings; from schemas.topics import destination; "
            f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "", f"the SDK imports {loaded.stdout.strip()}"


def test_the_cli_help_needs_no_extra() -> None:
    code = ("import sys; sys.argv = ['llmwatch', '--help']; from llmwatch.cli import app; "
            "import contextlib; "
            "exec('with contextlib.suppress(SystemExit): app()'); "
            f"print('LOADED=' + ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "LOADED=\n" in out or out.rstrip().endswith("LOADED="), out[-300:]


def test_base_dependencies_leave_heavy_ones_to_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "faust", "vllm", "chdb", "transformers", "fastapi", "peft"):
        assert heavy not in base, f"{heavy} belongs in an extra"
    extras = project["optional-dependencies"]
    assert {"worker", "serving", "train", "all"} <= set(extras)
    assert any("faust" in r for r in extras["worker"]) and any("peft" in r for r in extras["train"])
