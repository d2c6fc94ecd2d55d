import asyncio

import pytest

from streams.kafka.app import TablesAtOnce, create_app
from streams.settings import Settings


def test_the_table_manager_starts_its_recovery_without_faust_s_one_second_sleep(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def start() -> list[str]:
        tables = create_app(Settings(_env_file=None)).tables
        assert isinstance(tables, TablesAtOnce)
        steps: list[str] = []

        async def sleep(seconds: float) -> None:
            steps.append(f"sleep {seconds}")

        async def update_channels() -> None:
            steps.append("channels")

        class Recovery:
            async def start(self) -> None:
                steps.append("recovery")

        monkeypatch.setattr(tables, "sleep", sleep)
        monkeypatch.setattr(tables, "_update_channels", update_channels)
        tables._recovery = Recovery()  # type: ignore[assignment]
        await tables.on_start()
        return steps

    assert asyncio.run(start()) == ["channels", "recovery"]
