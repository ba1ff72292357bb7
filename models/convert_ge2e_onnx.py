"""Build ``models/ge2e_speaker.onnx`` from ``models/ge2e_speaker.npz`` (run once).

The same GE2E speaker encoder (resemblyzer 0.1.4, see ``convert_ge2e.py``) as an ONNX
graph of three ``LSTM`` nodes and the final linear layer, so onnxruntime runs the 480
recurrent steps of a window natively: about half the CPU of the numpy loop, and without
the interpreter lock, which the numpy loop held for thousands of small calls per
window. Input ``mel``: (160, batch, 40) frames; output ``raw``: (batch, 256), the
embedding before its ReLU's L2 normalisation (done by the caller).

ONNX's LSTM orders its gates i, o, f, c; torch's are i, f, g(c), o; the two torch
biases become ONNX's ``Wb`` and ``Rb``. Needs the ``onnx`` package (not a dependency of
Proctor; use a scratch venv): ``python models/convert_ge2e_onnx.py``. It checks the
graph against :class:`proctor.detectors.speakers.Ge2eReference` on random and
speech-like input and prints the sha256 for ``models/manifest.json``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "ge2e_speaker.npz"
OUT = HERE / "ge2e_speaker.onnx"
HIDDEN = 256
LAYERS = 3
FRAMES = 160
MELS = 40
# torch's gate blocks (i, f, g, o) in ONNX's order (i, o, f, c)
TORCH_TO_ONNX = (0, 3, 1, 2)


def _reorder(weight: np.ndarray) -> np.ndarray:
    blocks = np.split(weight, 4, axis=0)
    return np.concatenate([blocks[i] for i in TORCH_TO_ONNX], axis=0)


def build(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    nodes, inits = [], []
    current = "mel"
    for layer in range(LAYERS):
        w = _reorder(weights[f"lstm.weight_ih_l{layer}"])[None]
        r = _reorder(weights[f"lstm.weight_hh_l{layer}"])[None]
        b = np.concatenate([_reorder(weights[f"lstm.bias_ih_l{layer}"]),
                            _reorder(weights[f"lstm.bias_hh_l{layer}"])])[None]
        for name, value in (("W", w), ("R", r), ("B", b)):
            inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}{layer}"))
        outputs = [f"y{layer}", f"h{layer}"]
        nodes.append(helper.make_node("LSTM", [current, f"W{layer}", f"R{layer}", f"B{layer}"],
                                      outputs, hidden_size=HIDDEN, name=f"lstm{layer}"))
        if layer < LAYERS - 1:  # (T, 1 direction, batch, H) -> (T, batch, H)
            nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
            current = f"x{layer + 1}"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    inits.append(numpy_helper.from_array(
        np.ascontiguousarray(weights["linear.weight"].T).astype(np.float32), "linear_w"))
    inits.append(numpy_helper.from_array(weights["linear.bias"].astype(np.float32), "linear_b"))
    last = f"h{LAYERS - 1}"  # (1 direction, batch, H)
    nodes += [helper.make_node("Squeeze", [last, "axis0"], ["final"]),
              helper.make_node("MatMul", ["final", "linear_w"], ["projected"]),
              helper.make_node("Add", ["projected", "linear_b"], ["biased"]),
              helper.make_node("Relu", ["biased"], ["raw"])]
    graph = helper.make_graph(
        nodes, "ge2e_speaker",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [FRAMES, "batch", MELS])],
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="proctor models/convert_ge2e_onnx.py")
    model.ir_version = 8  # readable by every onnxruntime >= 1.15
    onnx.checker.check_model(model)
    return model


def _check(path: Path) -> None:
    import onnxruntime as ort

    sys.path.insert(0, str(HERE.parent))
    from proctor.detectors.speakers import Ge2eReference

    reference = Ge2eReference(SOURCE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    mels = [rng.normal(0, 0.3, (FRAMES, MELS)).astype(np.float32) for _ in range(4)]
    raw = session.run(None, {"mel": np.stack(mels, axis=1)})[0]
    for index, mel in enumerate(mels):
        got = raw[index] / max(float(np.linalg.norm(raw[index])), 1e-12)
        want = reference.embed_mel(mel)
        error = float(np.abs(got - want).max())
        assert error < 1e-4, f"window {index}: ONNX differs from numpy by {error}"
    print("ONNX graph matches the numpy forward pass (max error < 1e-4)")


def main() -> None:
    with np.load(SOURCE) as data:
        weights = {k: np.asarray(v) for k, v in data.items()}
    OUT.write_bytes(build(weights).SerializeToString())
    _check(OUT)
    print(f"{OUT.name}: sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
