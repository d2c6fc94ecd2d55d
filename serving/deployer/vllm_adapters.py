"""Loading and unloading LoRA adapters in a running vLLM (runtime LoRA updating), only from the adapters dir.

The path is checked here, before vLLM sees it: a deployment may only put into service what the trainer wrote
(and its lineage describes), never a folder elsewhere on the machine.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from schemas.errors import ServingError


class VllmAdapters:
    def __init__(self, base_url: str, adapters_dir: Path, *, api_key: str = "", timeout: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self.adapters_dir = adapters_dir.resolve()
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def _post(self, path: str, body: dict[str, str]) -> httpx.Response:
        try:
            return httpx.post(f"{self.base_url}{path}", json=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ServingError(f"vLLM at {self.base_url} did not answer {path} ({exc!r}): is it running?") from exc

    def served(self) -> set[str]:
        """Every name vLLM answers to: the base model and the adapters it has loaded."""
        try:
            response = httpx.get(f"{self.base_url}/v1/models", headers=self.headers, timeout=self.timeout)
            response.raise_for_status()
            return {model["id"] for model in response.json()["data"]}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ServingError(f"cannot list vLLM's models at {self.base_url} ({exc!r}): is it running?") from exc

    def load(self, name: str, path: Path | str) -> None:
        """Idempotent: an adapter vLLM already serves by this name is left as it is."""
        folder = Path(path).resolve()
        if not folder.is_relative_to(self.adapters_dir):
            raise ServingError(f"adapter {name!r} is at {folder}, outside the adapters directory "
                               f"{self.adapters_dir}: only adapters the trainer wrote there are deployed")
        if not (folder / "adapter_config.json").is_file():
            raise ServingError(f"{folder} has no adapter_config.json: not a LoRA adapter (deleted, or half written?)")
        if name in self.served():
            return
        response = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        if response.status_code != 200:
            raise ServingError(f"vLLM refused to load adapter {name!r} from {folder}: {response.text[:500]}")

    def unload(self, name: str) -> None:
        """Idempotent: an adapter vLLM does not serve is already unloaded."""
        if name not in self.served():
            return
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code != 200:
            raise ServingError(f"vLLM refused to unload adapter {name!r}: {response.text[:500]}")
