"""Stream processors: pure functions over batches of typed events, and the thin Faust agents around them."""
