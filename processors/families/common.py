"""Grouping shared by the families: one series per model, adapter and prompt version."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

GROUP_KEYS = ["model", "adapter", "prompt_version"]

def by_group(frame: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str], pd.DataFrame]]:
    for key, group in frame.groupby(GROUP_KEYS, sort=True):
        yield (str(key[0]), str(key[1]), str(key[2])), group
