"""The deployer: a passing candidate adapter is loaded into vLLM, canaried through the gateway, then promoted or
rolled back on live metrics (`canary.py` is the pure analysis)."""
