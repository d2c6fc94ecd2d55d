"""Metric families: each a pure function from one window's batch (a DataFrame of typed columns) to values."""
