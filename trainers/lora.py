"""LoRA fine-tuning with peft on the base model vLLM serves, bounded in steps and seconds, seeded.

The adapter must be one vLLM can load next to that base: rank at most its `--max-lora-rank` (the settings
refuse more), target modules from its LoRA support (q/k/v/o and the MLP projections), and only
`adapter_config.json` + `adapter_model.safetensors` (no embedding layers). Training runs on CPU on the
embedded machines and on the GPU when there is one. The loss counts the answer's tokens only: the prompt,
formatted with the base model's own chat template, is context.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.dataset import Example

OnLog = Callable[[int, float], None]
"""(step, loss of that step)."""


@dataclass(frozen=True)
class LoraParams:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 3e-3
    batch_size: int = 4
    max_steps: int = 24
    max_seconds: float = 120
    max_length: int = 256
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_settings(cls, training: Any) -> LoraParams:
        """From `streams.settings.Training` (duck-typed: trainers/ takes settings from its callers)."""
        return cls(rank=training.rank, alpha=training.alpha, dropout=training.dropout,
                   target_modules=tuple(training.target_modules), learning_rate=training.learning_rate,
                   batch_size=training.batch_size, max_steps=training.max_steps, max_seconds=training.max_seconds,
                   max_length=training.max_length, seed=training.seed, device=training.device)

    def as_strings(self) -> dict[str, str]:
        return {name: ",".join(v) if isinstance(v := getattr(self, name), tuple) else str(v)
                for name in self.__dataclass_fields__}


@dataclass
class TrainResult:
    steps: int
    stopped_by: str
    """max_steps, max_seconds or stop (the process was asked to stop)."""
    seconds: float
    device: str
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    trainable_parameters: int = 0


def pick_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def load_base(path: str | Path, device: str) -> tuple[Any, Any]:
    """The base model (float32 on CPU, bfloat16 on a GPU that has it) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)  # type: ignore[arg-type]
    return model, tokenizer


def prompt_text(tokenizer: Any, example: Example) -> str:
    return tokenizer.apply_chat_template(example.chat(), tokenize=False, add_generation_prompt=True)


def encode(tokenizer: Any, example: Example, max_length: int) -> dict[str, list[int]]:
    """Token ids of the chat with the answer; labels -100 on the prompt, so only the answer is learnt."""
    prompt = tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]
    full_text = tokenizer.apply_chat_template([*example.chat(), {"role": "assistant", "content": example.target}],
                                              tokenize=False)
    full = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    cut = len(prompt) if full[: len(prompt)] == prompt else _common_prefix(prompt, full)
    full = full[:max_length]
    labels = [-100] * min(cut, len(full)) + full[cut:]
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def train_lora(model: Any, tokenizer: Any, examples: Sequence[Example], params: LoraParams, *,
               on_log: OnLog | None = None, should_stop: Callable[[], bool] = lambda: False,
               work_dir: Path) -> tuple[Any, TrainResult]:
    """Wrap `model` in a fresh LoRA adapter and train it; returns the peft model (adapter in memory)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    set_seed(params.seed)
    device = next(model.parameters()).device.type
    config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                        target_modules=list(params.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    rows = [encode(tokenizer, example, params.max_length) for example in examples]
    result = TrainResult(steps=0, stopped_by="max_steps", seconds=0.0, device=device, trainable_parameters=trainable)
    started = time.monotonic()

    class Bounds(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if should_stop():
                result.stopped_by, control.should_training_stop = "stop", True
            elif time.monotonic() - started >= params.max_seconds and state.global_step < params.max_steps:
                result.stopped_by, control.should_training_stop = "max_seconds", True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs and math.isfinite(logs["loss"]):
                result.loss_curve.append((state.global_step, float(logs["loss"])))
                if on_log is not None:
                    on_log(state.global_step, float(logs["loss"]))

    arguments = TrainingArguments(
        output_dir=str(work_dir), max_steps=params.max_steps, per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
        report_to=[], seed=params.seed, data_seed=params.seed, use_cpu=device == "cpu", disable_tqdm=True,
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(), remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=peft_model, args=arguments, train_dataset=rows, data_collator=collator,
                      callbacks=[Bounds()])
    trainer.remove_callback(PrinterCallback)  # the loss goes to `on_log`, not to stdout
    trainer.train()
    result.steps = trainer.state.global_step
    result.seconds = time.monotonic() - started
    peft_model.eval()
    return peft_model, result


def save_adapter(peft_model: Any, directory: Path) -> None:
    """adapter_config.json + adapter_model.safetensors, nothing else that vLLM would have to understand."""
    peft_model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
