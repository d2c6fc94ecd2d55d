"""Serving: the gateway (`gateway/`), vLLM (`vllm/`), and `stack.py`, which runs both as processes."""
