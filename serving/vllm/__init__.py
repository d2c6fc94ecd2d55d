"""Running vLLM: the launcher, and the embedded model (SmolLM2 converted once from its GGUF)."""
