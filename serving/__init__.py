"""The OpenAI-compatible gateway, the vLLM launcher and the deployer (built by a later issue)."""
