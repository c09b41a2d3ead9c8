#!/usr/bin/env python3
"""Makes the ONNX fixtures of mnv2c's tests with real exporters (versions: requirements-onnx.txt).

    python3 -m venv venv && venv/bin/pip install -r tools/requirements-onnx.txt
    venv/bin/python tools/onnx_fixtures.py

Writes tests/fixtures/onnx/, for each model M:
  M.onnx             the model
  M.x.npy            an input batch in the layout the file declares
  M.probs.npy        ONNX Runtime's first output (the probabilities of a classifier)
  M.logits.npy       ONNX Runtime's value of the final Softmax's input (the first output when the
                     model has no final Softmax)
Models:
  tutorial_small     ../shared/bench/make_onnx.py's tutorial network (its own build(), NCHW,
                     opset 17, Conv/BN/Clip(input form)/Add/GAP/Flatten/Softmax, 1x1-conv
                     classifier), cut to its first 4 blocks at 32x32 with 10 classes
  keras_nhwc_op13    keras.applications.MobileNetV2(alpha=0.35, 32x32, 5 classes), random weights
                     with calibrated BN statistics, converted by tf2onnx at opset 13 (NHWC input,
                     symbolic batch: tf2onnx's own Transpose pair)
  keras_nchw_op9     the same Keras model, tf2onnx --inputs-as-nchw at opset 9 (Clip with min/max
                     attributes, Pad and ReduceMean with attribute forms)
  keras_nchw_op18    the same, --inputs-as-nchw at opset 18
  ops_mix_op13       a small graph made with onnx.helper covering the remaining operators: Pad,
                     Relu, Clip, Mul/Sub/Div/Add by constants, ReduceMean, the exporters' shape
                     subgraph Shape->Gather->Unsqueeze->Concat->Reshape, Squeeze, Gemm, MatMul,
                     Transpose, Identity, Dropout, two named outputs (logits and prob)
  ops_mix_ext        ops_mix_op13 with its initializers in an external file (ops_mix_ext.data)

    venv/bin/python tools/onnx_fixtures.py --bench DIR

writes the full-size models of the head-to-head benchmark (docs/performance.md) to DIR instead,
too large to commit: mnv2_tutorial.onnx (make_onnx.py's tutorial network, 224x224, 1000
classes) and keras_mnv2_224.onnx (keras.applications.MobileNetV2 alpha 1.0, 224x224, 1000
classes, random weights, tf2onnx opset 13, NHWC input).
"""
import copy
import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "onnx")
MAKE_ONNX = os.path.join(HERE, "..", "..", "shared", "bench", "make_onnx.py")
RNG = np.random.default_rng(20261201)


def ort_reference(name, model_path, x):
    """Runs ONNX Runtime on x and saves input, probabilities (first output) and logits (the final
    Softmax's input, exposed as an extra output of a copy of the model)."""
    m = onnx.load(model_path)
    out0 = m.graph.output[0].name
    producer = [n for n in m.graph.node if out0 in n.output]
    logits_name = producer[0].input[0] if producer and producer[0].op_type == "Softmax" else out0
    m2 = copy.deepcopy(m)
    if logits_name != out0:
        m2.graph.output.append(helper.make_empty_tensor_value_info(logits_name))
    # The external-data fixture loads its tensors from next to the original file.
    tmp = os.path.join(OUT, f".{name}.ort.onnx")
    onnx.save(m2, tmp)
    try:
        sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {sess.get_inputs()[0].name: x})
    finally:
        os.remove(tmp)
    probs = outs[0]
    logits = outs[len(m.graph.output)] if logits_name != out0 else outs[0]
    np.save(os.path.join(OUT, f"{name}.x.npy"), x.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}.probs.npy"), probs.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}.logits.npy"), np.asarray(logits, np.float32))
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"{name}: opset {m.opset_import[0].version}, in {x.shape} -> {probs.shape}, ops {ops}")


def tutorial_small():
    spec = importlib.util.spec_from_file_location("make_onnx", MAKE_ONNX)
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    mk.BLOCKS_TUTORIAL = mk.BLOCKS_TUTORIAL[:4]
    model = mk.build("tutorial", hw=32, batch=1, seed=0, num_classes=10)
    path = os.path.join(OUT, "tutorial_small.onnx")
    onnx.save(model, path)
    ort_reference("tutorial_small", path, RNG.standard_normal((1, 3, 32, 32)).astype(np.float32))


def calibrate(keras, model, calib):
    """Sets every BatchNormalization's moving statistics to those of its input on `calib`, in
    layer order, so 50+ layers of random weights neither vanish nor explode."""
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        probe = keras.Model(model.inputs, layer.input)
        act = np.asarray(probe(calib, training=False), dtype=np.float64)
        c = act.shape[-1]
        gamma = RNG.uniform(0.6, 1.4, c)
        beta = RNG.normal(0.0, 0.2, c)
        mean, var = act.mean(axis=(0, 1, 2)), act.var(axis=(0, 1, 2))
        layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])


def keras_models():
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=True,
                                           weights=None, classes=5)
    calibrate(keras, model, RNG.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32))
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image"),)
    x = RNG.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    for name, opset, nchw in [("keras_nhwc_op13", 13, False), ("keras_nchw_op9", 9, True),
                              ("keras_nchw_op18", 18, True)]:
        path = os.path.join(OUT, f"{name}.onnx")
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=path,
                                   inputs_as_nchw=["image"] if nchw else None)
        ort_reference(name, path, np.transpose(x, (0, 3, 1, 2)).copy() if nchw else x)


def ops_mix():
    """Operators the exporters' MobileNetV2s above do not use, around one conv stack (NCHW)."""
    W = []

    def w(name, arr):
        W.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def i64(name, vals):
        W.append(numpy_helper.from_array(np.asarray(vals, np.int64), name))
        return name

    N = helper.make_node
    c1 = w("conv1.weight", RNG.normal(0, 0.3, (8, 3, 3, 3)))
    c1b = w("conv1.bias", RNG.normal(0, 0.1, 8))
    dw = w("dw.weight", RNG.normal(0, 0.3, (8, 1, 3, 3)))
    pw = w("pw.weight", RNG.normal(0, 0.3, (12, 8, 1, 1)))
    nodes = [
        N("Pad", ["input.1", i64("pads", [0, 0, 1, 1, 0, 0, 1, 1])], ["padded"], mode="constant"),
        N("Conv", ["padded", c1, c1b], ["onnx::Relu_1"], name="/conv1/Conv", strides=[2, 2]),
        N("Relu", ["onnx::Relu_1"], ["relu1"], name="/relu1/Relu"),
        N("Mul", ["relu1", w("scale", RNG.uniform(0.5, 1.5, (1, 8, 1, 1)))], ["scaled"]),
        N("Sub", ["scaled", w("shift", RNG.normal(0, 0.1, (1, 8, 1, 1)))], ["shifted"]),
        N("Conv", ["shifted", dw], ["dwout"], group=8, auto_pad="SAME_UPPER",
          kernel_shape=[3, 3]),
        N("Clip", ["dwout", w("lo", -1.0), w("hi", 4.0)], ["clipped"]),
        N("Div", ["clipped", w("two", 2.0)], ["halved"]),
        N("Conv", ["halved", pw], ["pwout"], name="/pw/Conv"),
        N("Add", ["pwout", w("bias2", RNG.normal(0, 0.1, (12, 1, 1)))], ["biased"]),
        N("Identity", ["biased"], ["ident"]),
        N("ReduceMean", ["ident"], ["pooled"], axes=[2, 3], keepdims=1),
        N("Shape", ["pooled"], ["shape"]),
        N("Gather", ["shape", i64("zero", 0)], ["batch"], axis=0),
        N("Unsqueeze", ["batch", i64("ax0", [0])], ["batch1"]),
        N("Concat", ["batch1", i64("minus1", [-1])], ["newshape"], axis=0),
        N("Reshape", ["pooled", "newshape"], ["flat"]),
        N("Dropout", ["flat"], ["dropped"]),
        N("Gemm", ["dropped", w("fc1.weight", RNG.normal(0, 0.3, (16, 12))),
                   w("fc1.bias", RNG.normal(0, 0.1, 16))], ["fc1"], transB=1),
        N("Transpose", ["fc1"], ["fc1t"], perm=[1, 0]),
        N("Transpose", ["fc1t"], ["fc1tt"], perm=[1, 0]),
        N("MatMul", ["fc1tt", w("fc2.weight", RNG.normal(0, 0.3, (16, 6)))], ["logits"]),
        N("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "ops_mix",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 20, 20])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 6]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])], W)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="mnv2c-fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    x = RNG.standard_normal((2, 3, 20, 20)).astype(np.float32)
    path = os.path.join(OUT, "ops_mix_op13.onnx")
    onnx.save(model, path)
    ort_reference("ops_mix_op13", path, x)
    ext = os.path.join(OUT, "ops_mix_ext.onnx")
    onnx.save(model, ext, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ops_mix_ext.data", size_threshold=0)
    ort_reference("ops_mix_ext", ext, x)


def bench_models(out):
    import keras
    import tensorflow as tf
    import tf2onnx

    os.makedirs(out, exist_ok=True)
    spec = importlib.util.spec_from_file_location("make_onnx", MAKE_ONNX)
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    onnx.save(mk.build("tutorial", hw=224, batch=1, seed=0), os.path.join(out, "mnv2_tutorial.onnx"))
    keras.utils.set_random_seed(5)
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=13,
                               output_path=os.path.join(out, "keras_mnv2_224.onnx"))
    print("wrote", out)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--bench":
        return bench_models(sys.argv[2])
    os.makedirs(OUT, exist_ok=True)
    tutorial_small()
    ops_mix()
    keras_models()


if __name__ == "__main__":
    sys.exit(main())
