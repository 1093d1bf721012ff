"""Train the zoo's own models from real or generated data, deterministically, and record their numbers.

    python -m lepton_hls.zoo.train digits_cnn|digits_cloud|cancer_mlp|cancer_cloud|anomaly_ae [--out DIR]

Writes `<name>.json`, `<name>_weights.h5`, `<name>_preprocessing.json` and the model's entry in `metrics.json`
(into the zoo directory unless --out is given). In the edge models every layer is quantized (QKeras) and every
activation is a quantizer, so hls4ml's fixed-point C simulation reproduces the float64 model exactly on inputs on
its grid. The cloud models are plain float Keras: they run on a server, as the edge model's stronger partner.
The recorded metrics are measured on the saved files reloaded from disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lepton_host.manifest import Preprocessing

from . import ZOO_DIR
from .keras_io import load_qkeras, save_qkeras

SEED = 20261124
WEIGHT_Q = "quantized_bits(6,0,alpha=1)"


def _deterministic(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


# QActivation keeps its quantizer as given and has no from_config: a quantizer object would not survive the
# JSON round trip, its string form does.

# ---- digits_cnn --------------------------------------------------------------------------------------------
DIGITS_PRE = Preprocessing(
    kind="standard", mean=(0.0,), scale=(16.0,), note="pixel values 0..16 divided by 16 (one value for all pixels)"
)


def build_digits_cnn():
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits

    wq = quantized_bits(6, 0, alpha=1)
    inp = tf.keras.Input((8, 8, 1), name="pixels")
    x = QConv2D(8, (3, 3), kernel_quantizer=wq, bias_quantizer=wq, name="conv")(inp)
    x = QActivation("quantized_relu(6)", name="conv_relu")(x)
    x = tf.keras.layers.MaxPooling2D((2, 2), name="pool")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = QDense(10, kernel_quantizer=wq, bias_quantizer=wq, name="logits")(x)
    out = tf.keras.layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inp, out, name="digits_cnn")


def train_digits_cnn(out_dir: Path) -> dict:
    import tensorflow as tf

    from .digits import test_split, train_split

    _deterministic(SEED)
    x_train, y_train = train_split()
    x_test, y_test = test_split()
    model = build_digits_cnn()
    model.compile(
        optimizer=tf.keras.optimizers.Adam(0.005),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(DIGITS_PRE.apply(x_train), y_train, epochs=120, batch_size=32, shuffle=True, verbose=0)
    paths = _save(model, "digits_cnn", DIGITS_PRE, out_dir)
    return _classifier_record(load_qkeras(*paths), DIGITS_PRE, (x_train, y_train), (x_test, y_test))


# ---- digits_cloud -------------------------------------------------------------------------------------------
# The stronger partner of digits_cnn: same split, same input and preprocessing, plain float Keras layers (it runs
# on a server, never on the FPGA), so a sample the edge is unsure about can be answered again by it.
CLOUD_EPOCHS = 15


def build_digits_cloud():
    import tensorflow as tf

    layers = tf.keras.layers
    inp = tf.keras.Input((8, 8, 1), name="pixels")
    x = inp
    for block, filters in enumerate((32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{block}a")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{block}b")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
        x = layers.Dropout(0.25, name=f"drop{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.4, name="drop_dense")(x)
    x = layers.Dense(10, name="logits")(x)
    out = layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inp, out, name="digits_cloud")


def shifted_copies(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images plus their 8 one-pixel shifts (blank pixels shifted in): handwriting is not centred the same
    way twice, and 1,437 training images are too few for a model this size to learn that on its own."""
    xs, ys = [x], [y]
    h, w = x.shape[1:3]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            s = np.zeros_like(x)
            s[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            xs.append(s)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def train_digits_cloud(out_dir: Path) -> dict:
    import tensorflow as tf

    from .digits import test_split, train_split

    _deterministic(SEED)
    x_train, y_train = train_split()
    x_test, y_test = test_split()
    x_aug, y_aug = shifted_copies(x_train, y_train)  # from the training split only
    model = build_digits_cloud()
    batch = 64
    steps = CLOUD_EPOCHS * -(-len(x_aug) // batch)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(0.002, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(DIGITS_PRE.apply(x_aug), y_aug, epochs=CLOUD_EPOCHS, batch_size=batch, shuffle=True, verbose=0)
    paths = _save(model, "digits_cloud", DIGITS_PRE, out_dir)
    return _classifier_record(load_qkeras(*paths), DIGITS_PRE, (x_train, y_train), (x_test, y_test))


# ---- cancer_mlp, cancer_cloud ------------------------------------------------------------------------------
# Both halves of the pair read the same preprocessing: a per-feature standard scaler fitted on the training split.


def cancer_preprocessing() -> Preprocessing:
    from .cancer_data import train_split

    x_train, _ = train_split()
    return Preprocessing(
        kind="standard",
        # full precision: some features are around 1e-3, where six decimals would shift them visibly
        mean=tuple(float(v) for v in x_train.mean(axis=0)),
        scale=tuple(float(v) for v in x_train.std(axis=0)),
        note="per-feature standard scaler fitted on the 398-row training split of the breast cancer data",
    )


def build_cancer_mlp():
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits

    # 4-bit weights and a 4-bit ReLU: small enough for a corner of the fabric, which is what makes it the LITTLE
    wq = quantized_bits(4, 0, alpha=1)
    inp = tf.keras.Input((30,), name="features")
    x = QDense(8, kernel_quantizer=wq, bias_quantizer=wq, name="dense")(inp)
    x = QActivation("quantized_relu(4)", name="relu")(x)
    x = QDense(2, kernel_quantizer=wq, bias_quantizer=wq, name="logits")(x)
    out = tf.keras.layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inp, out, name="cancer_mlp")


def build_cancer_cloud():
    import tensorflow as tf

    layers, l2 = tf.keras.layers, tf.keras.regularizers.l2
    inp = tf.keras.Input((30,), name="features")
    x = layers.GaussianNoise(0.3, name="noise")(inp)  # training only: 398 rows, a net this size would memorize them
    for i, units in enumerate((128, 64), start=1):
        x = layers.Dense(units, activation="relu", kernel_regularizer=l2(1e-3), name=f"dense{i}")(x)
        x = layers.Dropout(0.5, name=f"drop{i}")(x)
    x = layers.Dense(2, kernel_regularizer=l2(1e-3), name="logits")(x)
    out = layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inp, out, name="cancer_cloud")


def _train_cancer(name: str, model, learning_rate: float, epochs: int, out_dir: Path) -> dict:
    import tensorflow as tf

    from .cancer_data import test_split, train_split

    x_train, y_train = train_split()
    x_test, y_test = test_split()
    pre = cancer_preprocessing()
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(pre.apply(x_train), y_train, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    paths = _save(model, name, pre, out_dir)
    return _classifier_record(load_qkeras(*paths), pre, (x_train, y_train), (x_test, y_test))


def train_cancer_mlp(out_dir: Path) -> dict:
    _deterministic(SEED)
    return _train_cancer("cancer_mlp", build_cancer_mlp(), 0.005, 100, out_dir)


def train_cancer_cloud(out_dir: Path) -> dict:
    _deterministic(SEED)
    return _train_cancer("cancer_cloud", build_cancer_cloud(), 0.001, 150, out_dir)


# ---- anomaly_ae --------------------------------------------------------------------------------------------
AE_TRAIN_SEED, AE_THRESHOLD_SEED, AE_TEST_SEED = 100, 101, 0
AE_PERCENTILE = 99.0


def build_anomaly_ae():
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits

    wq = quantized_bits(6, 0, alpha=1)
    inp = tf.keras.Input((32,), name="features")
    x = inp
    for i, units in enumerate((16, 8, 16)):
        x = QDense(units, kernel_quantizer=wq, bias_quantizer=wq, name=f"dense{i + 1}")(x)
        x = QActivation("quantized_relu(8,3)", name=f"relu{i + 1}")(x)
    # The output is the last QDense's exact sum of 6-bit weights times 8-bit activations: a fixed-point value
    # (multiples of 2^-10) on which C simulation and model agree bit for bit. No QActivation(quantized_bits)
    # follows it: hls4ml 1.3.0 merges such a linear quantizer into a Dense whose result precision is 'auto'
    # and drops its rounding, so the C simulation would no longer match the model.
    out = QDense(32, kernel_quantizer=wq, bias_quantizer=wq, name="reconstruction")(x)
    return tf.keras.Model(inp, out, name="anomaly_ae")


def reconstruction_error(model, x_scaled: np.ndarray) -> np.ndarray:
    """Mean squared error per frame between the scaled input and the model's output."""
    y = model.predict(x_scaled, verbose=0, batch_size=1024)
    return np.mean((np.asarray(x_scaled, np.float64) - y) ** 2, axis=1)


def train_anomaly_ae(out_dir: Path) -> dict:
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from .sensor_data import labelled_frames, normal_frames

    _deterministic(SEED)
    x_train = normal_frames(8000, seed=AE_TRAIN_SEED)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    pre = Preprocessing(
        kind="standard",
        mean=tuple(round(float(v), 6) for v in mean),
        scale=tuple(round(float(v), 6) for v in std),
        note="per-band standard scaler fitted on 8,000 generated normal frames (dB)",
    )
    model = build_anomaly_ae()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.003), loss="mse")
    xs = pre.apply(x_train)
    model.fit(xs, xs, epochs=60, batch_size=64, shuffle=True, verbose=0)
    paths = _save(model, "anomaly_ae", pre, out_dir)
    reloaded = load_qkeras(*paths)

    held_out = reconstruction_error(reloaded, pre.apply(normal_frames(2000, seed=AE_THRESHOLD_SEED)))
    threshold = float(np.percentile(held_out, AE_PERCENTILE))
    x_test, y_test = labelled_frames(2000, seed=AE_TEST_SEED)
    err = reconstruction_error(reloaded, pre.apply(x_test))
    flagged = err > threshold
    return {
        "threshold": round(threshold, 6),
        "metrics": {
            "roc_auc": round(float(roc_auc_score(y_test, err)), 4),
            "detection_rate": round(float(flagged[y_test == 1].mean()), 4),
            "false_alarm_rate": round(float(flagged[y_test == 0].mean()), 4),
            "threshold_percentile": AE_PERCENTILE,
            "n_test": int(len(y_test)),
        },
    }


# ---- common ------------------------------------------------------------------------------------------------
def _classifier_record(reloaded, pre: Preprocessing, train: tuple, test: tuple) -> dict:
    """Accuracy of the model reloaded from its saved files on the training and the held-out split."""
    (x_train, y_train), (x_test, y_test) = train, test
    proba = np.asarray(reloaded.predict(pre.apply(x_test), verbose=0), np.float64)
    train_pred = reloaded.predict(pre.apply(x_train), verbose=0).argmax(axis=1)
    return {
        "metrics": {
            "test_accuracy": round(float((proba.argmax(axis=1) == y_test).mean()), 4),
            "train_accuracy": round(float((train_pred == y_train).mean()), 4),
            # how well the model's confidence tells right from wrong matters to a cascade, not only its argmax
            "test_log_loss": round(float(-np.mean(np.log(np.clip(proba[np.arange(len(y_test)), y_test], 1e-12, 1)))), 4),
            "n_test": int(len(y_test)),
        }
    }


def _save(model, name: str, pre: Preprocessing, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, weights_path = out_dir / f"{name}.json", out_dir / f"{name}_weights.h5"
    save_qkeras(model, json_path, weights_path)
    (out_dir / f"{name}_preprocessing.json").write_text(json.dumps(pre.to_dict(), indent=2) + "\n")
    return json_path, weights_path


TRAINERS = {
    "digits_cnn": train_digits_cnn,
    "digits_cloud": train_digits_cloud,
    "cancer_mlp": train_cancer_mlp,
    "cancer_cloud": train_cancer_cloud,
    "anomaly_ae": train_anomaly_ae,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_hls.zoo.train", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(TRAINERS))
    parser.add_argument("--out", type=Path, default=ZOO_DIR, help="directory to write into (default: the zoo)")
    args = parser.parse_args(argv)
    record = TRAINERS[args.name](args.out)
    metrics_path = args.out / "metrics.json"
    recorded = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    recorded[args.name] = record
    metrics_path.write_text(json.dumps(dict(sorted(recorded.items())), indent=2) + "\n")
    print(json.dumps({args.name: record}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
