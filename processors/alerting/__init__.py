"""Alert rules over metric points: evaluation (pure), the engine that feeds it, webhook delivery."""
