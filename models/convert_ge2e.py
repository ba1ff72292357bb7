"""Convert resemblyzer 0.1.4's GE2E speaker encoder to a plain numpy ``.npz`` (run once).

``resemblyzer/pretrained.pt`` is a *legacy* (pre-1.6, non-zip) torch checkpoint: five
pickles in a row (magic number, protocol version, system info, the checkpoint dict,
the list of storage keys) followed by each storage's raw bytes (an int64 element count,
then the elements, little-endian). Reading it needs no torch: a small unpickler maps
``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` types to numpy, and the
persistent ids of the storages to byte buffers filled in after the main pickle.

Only ``model_state``'s LSTM and linear weights are kept (the checkpoint also carries the
GE2E similarity scale and the optimiser's moments, which inference does not use). Run
from the repository root; the wheel is fetched with pip unless given:

    python models/convert_ge2e.py [--wheel Resemblyzer-0.1.4-py3-none-any.whl]

It writes ``models/ge2e_speaker.npz`` (committed) and prints the two sha256 sums that
go into ``models/manifest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "resemblyzer==0.1.4"
MEMBER = "resemblyzer/pretrained.pt"
OUT = Path(__file__).resolve().parent / "ge2e_speaker.npz"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LAYERS = 3

# torch storage class name -> numpy dtype of its elements
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass
class _Storage:
    """A torch storage whose bytes come after the main pickle."""

    dtype: type[np.generic]
    size: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    """``_rebuild_tensor_v2``'s arguments, materialised once the storages are read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        assert self.storage.data is not None, "storage bytes not read"
        itemsize = self.storage.data.itemsize
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset:], shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride)).copy()


def _rebuild_tensor_v2(storage: _Storage, offset: int, shape: tuple[int, ...],
                       stride: tuple[int, ...], *_: Any) -> _LazyTensor:
    return _LazyTensor(storage, offset, tuple(shape), tuple(stride))


class _TorchFreeUnpickler(pickle.Unpickler):
    def __init__(self, handle: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        # Legacy ids: ("storage", storage type, key, location, element count, view info)
        kind, dtype, key, _location, size, view = pid
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return self.storages.setdefault(key, _Storage(dtype, size))


def read_legacy_checkpoint(raw: bytes) -> dict[str, Any]:
    """The checkpoint dict with every tensor as a numpy array."""
    handle = io.BytesIO(raw)
    if pickle.load(handle) != LEGACY_MAGIC:
        raise ValueError("not a legacy torch checkpoint")
    pickle.load(handle)  # protocol version
    sys_info = pickle.load(handle)
    if not sys_info.get("little_endian", False):
        raise ValueError("big-endian checkpoint")
    storages: dict[str, _Storage] = {}
    checkpoint = _TorchFreeUnpickler(handle, storages).load()
    for key in pickle.load(handle):
        storage = storages[key]
        (count,) = struct.unpack("<q", handle.read(8))
        if count != storage.size:
            raise ValueError(f"storage {key}: {count} elements, pickle says {storage.size}")
        nbytes = count * np.dtype(storage.dtype).itemsize
        storage.data = np.frombuffer(handle.read(nbytes), dtype=storage.dtype)
    return _materialise(checkpoint)


def _materialise(value: Any) -> Any:
    if isinstance(value, _LazyTensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _materialise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_materialise(v) for v in value)
    return value


def encoder_weights(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inference weights, float32, named as in torch's ``nn.LSTM`` / ``nn.Linear``."""
    names = [f"lstm.{kind}_l{layer}" for layer in range(LAYERS)
             for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    names += ["linear.weight", "linear.bias"]
    weights = {name: np.ascontiguousarray(state[name], dtype=np.float32) for name in names}
    assert weights["lstm.weight_ih_l0"].shape == (1024, 40)
    assert weights["lstm.weight_hh_l2"].shape == (1024, 256)
    assert weights["linear.weight"].shape == (256, 256)
    return weights


def fetch_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PACKAGE,
                    "-d", str(folder)], check=True)
    return next(folder.glob("*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded resemblyzer 0.1.4 wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        raw = zipfile.ZipFile(wheel).read(MEMBER)
    checkpoint = read_legacy_checkpoint(raw)
    weights = encoder_weights(checkpoint["model_state"])
    np.savez(args.out, **weights)  # uncompressed: float weights barely compress
    print(f"source {MEMBER} sha256 {hashlib.sha256(raw).hexdigest()}")
    print(f"wrote {args.out} sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}")
    for name, array in weights.items():
        print(f"  {name:22s} {array.shape}")


if __name__ == "__main__":
    main()
