"""Cost per model, adapter and prompt version, per cohort, and the biggest spenders of the window.

Only priced requests count (cost_total present); `cost.unpriced` says how many had no price, so a model
missing from the price list shows up instead of looking free.
"""

from __future__ import annotations

import pandas as pd

from processors.families.common import by_group
from processors.windows import MetricValue


def cost_metrics(batch: pd.DataFrame, top_users: int = 5) -> list[MetricValue]:
    values = []
    for (model, adapter, version), group in by_group(batch):
        priced = group[group["cost_total"].notna()]
        key = (model, adapter, version)
        values.append(MetricValue("cost.unpriced", float(len(group) - len(priced)), *key))
        if priced.empty:
            continue
        values += [
            MetricValue("cost_total", float(priced["cost_total"].sum()), *key),
            MetricValue("cost_input_total", float(priced["cost_input"].sum()), *key),
            MetricValue("cost_output_total", float(priced["cost_output"].sum()), *key),
            MetricValue("cost_per_request", float(priced["cost_total"].mean()), *key),
        ]
        for cohort, spent in priced.groupby("cohort")["cost_total"].sum().items():
            if cohort:
                values.append(MetricValue("cost.cohort_total", float(spent), *key, labels={"cohort": str(cohort)}))
        users = priced[priced["user_id"] != ""].groupby("user_id")["cost_total"].sum()
        for user, spent in users.sort_values(ascending=False, kind="stable").head(top_users).items():
            values.append(MetricValue("cost.user_total", float(spent), *key, labels={"user": str(user)}))
    return values
