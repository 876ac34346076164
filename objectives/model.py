"""Build and train the Keras LSTM classifier. The only module that imports TensorFlow.

The standardization statistics (from the training part only) live inside the model as a frozen
``Normalization`` layer, so a saved model takes raw sequences and needs nothing else.
"""

from __future__ import annotations

import os

# Must be set before TensorFlow is imported, or its C++ start-up noise reaches the user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import gc  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

import absl.logging  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from objectives.detectors import EpochRecord  # noqa: E402
from objectives.imbalance import class_weights, oversample_indices  # noqa: E402
from objectives.metrics import cross_entropy, evaluate_predictions  # noqa: E402
from objectives.search_space import LstmParams, conv_pool_size, downsampled_steps  # noqa: E402

absl.logging.set_verbosity(absl.logging.ERROR)
tf.get_logger().setLevel(logging.ERROR)
_logger = logging.getLogger(__name__)

PREDICT_BATCH = 1024
# LSTM-FCN's convolutional branch (Karim et al. 2017): (filters in units of LstmParams.fcn_filters,
# kernel size) of its three blocks; published: 128, 256, 128 filters.
FCN_BLOCKS = ((1, 8), (2, 5), (1, 3))
# Batch norm's moving statistics (what a trained model predicts with) follow the batches 10x faster
# than Keras's default 0.99: on small sets (ECG200: 5 steps an epoch) the default left validation
# balanced accuracy at 0.50 for the first 11-14 epochs; with 0.9 it was 0.67 after epoch 1.
FCN_NORM_MOMENTUM = 0.9


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial cannot go on."""


def _finite_loss(logs: dict | None, epoch: int, detail: str = "") -> float:
    """The loss Keras logged for ``epoch`` (1-based); :class:`NonFiniteLoss` if it is NaN or infinite."""
    loss = float((logs or {}).get("loss", np.nan))
    if not np.isfinite(loss):
        raise NonFiniteLoss(f"training loss became {loss} at epoch {epoch}{detail}; lower the learning rate or clip gradients")
    return loss


def configure_threads(threads: int | None) -> None:
    """Limit TensorFlow's intra-op threads (call before the first op; later calls are ignored)."""
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        _logger.debug("TensorFlow already initialised; thread settings unchanged")


def reset_keras() -> None:
    """Free the previous trial's graph and tensors so memory stays flat over many trials."""
    # Keras 3's clear_session() would run its own gc.collect(); one full collection is enough.
    keras.backend.clear_session(free_memory=False)
    _drop_custom_gradients()
    gc.collect()


def _drop_custom_gradients() -> None:
    """Forget the per-trace custom gradients TensorFlow 2.21 never unregisters.

    Keras's optimizer step goes through ``tf.custom_gradient``, which in graph mode registers a
    ``CustomGradient-N`` entry in TensorFlow's global gradient registry that pins its whole traced
    graph (~10 MiB per trial; tensorflow/tensorflow#97697, fixed after 2.21). Once the session is
    cleared no live graph can use them. The registry is private API: if it moves, skip quietly.
    """
    try:
        from tensorflow.python.framework import ops as tf_ops

        registry = tf_ops.gradient_registry._registry
    except (ImportError, AttributeError):
        return
    for name in [n for n in registry if isinstance(n, str) and n.startswith("CustomGradient-")]:
        del registry[name]


def build_lstm(
    params: LstmParams, *, timesteps: int, features: int, n_classes: int, mean: np.ndarray, std: np.ndarray
) -> keras.Model:
    """The classifier a trial trains, built from Keras's own layers only (so a saved model loads anywhere).

    ``architecture="stacked"``: [mask zero padding] -> standardize -> [average over windows of
    ``downsample`` steps] -> [Conv1D -> BatchNorm -> ReLU -> max-pool to <= 128 steps] -> (Bi)LSTM x
    layers, dropout after each -> last state | mean | attention over time -> softmax.

    ``architecture="lstm_fcn"``: standardize -> [average over windows] -> see :func:`_lstm_fcn`.
    """
    inputs = keras.Input(shape=(timesteps, features), name="sequence")
    x = inputs
    if params.architecture == "lstm_fcn":
        x = keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std), name="standardize")(x)
        x = _downsample(params, x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="class_probabilities")(
            _lstm_fcn(params, x, features=features))
        model = keras.Model(inputs, outputs, name="lstm_fcn_classifier")
        model.compile(optimizer=_adam(params), loss="sparse_categorical_crossentropy")
        return model
    if params.masking and not params.conv_filters:
        x = keras.layers.Masking(mask_value=0.0, name="mask_padding")(x)
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std), name="standardize")(x)
    x = _downsample(params, x)
    if params.conv_filters:
        x = keras.layers.Conv1D(params.conv_filters, 5, padding="same", name="conv")(x)
        x = keras.layers.BatchNormalization(name="conv_norm")(x)
        x = keras.layers.Activation("relu", name="conv_relu")(x)
        pool = conv_pool_size(downsampled_steps(timesteps, params.downsample))
        if pool > 1:
            x = keras.layers.MaxPooling1D(pool, padding="same", name="conv_pool")(x)
    x = _lstm_stack(params, x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="class_probabilities")(x)
    model = keras.Model(inputs, outputs, name="lstm_classifier")
    model.compile(optimizer=_adam(params), loss="sparse_categorical_crossentropy")
    return model


def _downsample(params: LstmParams, x: Any) -> Any:
    """The series averaged over windows of ``params.downsample`` steps (the last one may be short)."""
    if params.downsample <= 1:
        return x
    return keras.layers.AveragePooling1D(params.downsample, padding="same", name="downsample")(x)


def _lstm_stack(params: LstmParams, x: Any) -> Any:
    """(Bi)LSTM x layers, dropout after each, then the last state | mean | attention over steps."""
    for i in range(params.layers):
        sequences = i < params.layers - 1 or params.pooling != "last"
        rnn = keras.layers.LSTM(params.units, return_sequences=sequences, name=f"lstm_{i + 1}")
        x = keras.layers.Bidirectional(rnn, name=f"lstm_{i + 1}")(x) if params.bidirectional else rnn(x)
        if params.dropout > 0:
            x = keras.layers.Dropout(params.dropout, name=f"dropout_{i + 1}")(x)
    if params.pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_over_time")(x)  # skips masked steps
    elif params.pooling == "attention":
        # Dot-product attention over time; the query is a learned projection of the (masked) mean state.
        width = x.shape[-1]
        query = keras.layers.Dense(width, use_bias=False, name="attention_query")(
            keras.layers.GlobalAveragePooling1D(name="attention_mean")(x))
        query = keras.layers.Reshape((1, width), name="attention_query_step")(query)
        x = keras.layers.Attention(name="attention")([query, x])
        x = keras.layers.Reshape((width,), name="attention_context")(x)
    return x


def _lstm_fcn(params: LstmParams, x: Any, *, features: int) -> Any:
    """LSTM-FCN (Karim et al. 2017): a fully convolutional branch beside an LSTM branch, concatenated.

    FCN branch: Conv1D f/k8, 2f/k5, f/k3 (f = ``fcn_filters``, published: 128), each BatchNorm + ReLU,
    then the mean over time; on
    multivariate data a squeeze-and-excite block after the first two (MLSTM-FCN, Karim et al. 2019).
    LSTM branch: the dimension-shuffled series (``Permute``: ``features`` steps of ``timesteps``-wide
    vectors; one step on univariate data) through the same (Bi)LSTM stack and pooling as
    ``"stacked"``; with ``pooling="attention"`` over the steps it is the attention variant (ALSTM-FCN).
    """
    conv = x
    for i, (scale, kernel) in enumerate(FCN_BLOCKS):
        filters = scale * params.fcn_filters
        conv = keras.layers.Conv1D(filters, kernel, padding="same", kernel_initializer="he_uniform",
                                   name=f"fcn_conv_{i + 1}")(conv)
        conv = keras.layers.BatchNormalization(momentum=FCN_NORM_MOMENTUM, name=f"fcn_norm_{i + 1}")(conv)
        conv = keras.layers.Activation("relu", name=f"fcn_relu_{i + 1}")(conv)
        if features > 1 and i < 2:
            conv = _squeeze_excite(conv, filters, name=f"fcn_se_{i + 1}")
    conv = keras.layers.GlobalAveragePooling1D(name="fcn_mean_over_time")(conv)
    shuffled = keras.layers.Permute((2, 1), name="dimension_shuffle")(x)
    recurrent = _lstm_stack(params, shuffled)
    return keras.layers.Concatenate(name="lstm_fcn_concat")([recurrent, conv])


def _squeeze_excite(x: Any, filters: int, *, name: str, ratio: int = 16) -> Any:
    """Rescale each channel by a gate computed from its mean over time (Hu et al. 2018)."""
    s = keras.layers.GlobalAveragePooling1D(name=f"{name}_squeeze")(x)
    s = keras.layers.Dense(max(1, filters // ratio), activation="relu", kernel_initializer="he_normal",
                           use_bias=False, name=f"{name}_reduce")(s)
    s = keras.layers.Dense(filters, activation="sigmoid", kernel_initializer="he_normal", use_bias=False,
                           name=f"{name}_excite")(s)
    s = keras.layers.Reshape((1, filters), name=f"{name}_gate")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def _adam(params: LstmParams, probe: GradientProbe | None = None) -> keras.optimizers.Optimizer:
    kwargs = {"learning_rate": params.learning_rate, "clipnorm": params.clipnorm or None}
    return _ProbedAdam(probe, **kwargs) if probe is not None else keras.optimizers.Adam(**kwargs)


def cosine_learning_rate(initial: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``initial`` (epoch 0) towards 0 at the epoch cap ``epochs``."""
    return float(initial * 0.5 * (1.0 + np.cos(np.pi * min(epoch, epochs) / max(epochs, 1))))


def predict_proba(model: keras.Model, X: np.ndarray) -> np.ndarray:
    # predict() builds a data iterator per call (~0.1 s); small sets go through in one batch.
    if len(X) <= PREDICT_BATCH:
        return np.asarray(model.predict_on_batch(X))
    return np.asarray(model.predict(X, batch_size=PREDICT_BATCH, verbose=0))


class GradientProbe:
    """Adds up, inside Keras's own training step, the gradient norms of the first and last layer.

    Keras computes every gradient anyway; the optimizer (:class:`_ProbedAdam`) hands them here
    before applying them, so the norms cost two small reductions per step and no extra trace.
    :meth:`read` gives the epoch's mean per-step norm and starts the next epoch.
    """

    def __init__(self, model: keras.Model) -> None:
        self._first = {id(v) for v in model.get_layer("lstm_1").trainable_variables}  # (Bi)LSTM
        self._last = {id(v) for v in model.get_layer("class_probabilities").trainable_variables}
        self._totals = tf.Variable(tf.zeros(3), trainable=False, name="gradient_probe")  # first, last, steps

    def record(self, pairs: list[tuple[tf.Tensor, Any]]) -> None:
        first = [g for g, v in pairs if id(v) in self._first and g is not None]
        last = [g for g, v in pairs if id(v) in self._last and g is not None]
        self._totals.assign_add(tf.stack([tf.linalg.global_norm(first), tf.linalg.global_norm(last), 1.0]))

    def read(self) -> tuple[float | None, float | None]:
        first, last, steps = (float(v) for v in self._totals.numpy())
        self._totals.assign(tf.zeros(3))
        return (first / steps, last / steps) if steps else (None, None)


class _ProbedAdam(keras.optimizers.Adam):
    """Adam that shows each step's gradients to a :class:`GradientProbe` (unclipped) first."""

    def __init__(self, probe: GradientProbe, **kwargs: Any) -> None:
        super().__init__(name="adam", **kwargs)
        self._gradient_probe = probe

    def apply_gradients(self, grads_and_vars: Any) -> Any:
        pairs = list(grads_and_vars)
        self._gradient_probe.record(pairs)
        return super().apply_gradients(pairs)


class EpochMonitor(keras.callbacks.Callback):
    """Scores validation every epoch, keeps the best weights, stops after ``patience`` flat epochs.

    It also writes ``val_loss`` into the epoch logs so ``ReduceLROnPlateau`` (placed after it)
    can use it without a second pass over the validation data.
    """

    def __init__(
        self, X_val: np.ndarray, y_val: np.ndarray, n_classes: int, *, patience: int,
        on_epoch: Callable[[EpochRecord], None], probe: GradientProbe | None = None, min_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.min_epochs = min_epochs  # never stopped for a flat score before this epoch
        self.probe = probe
        self.X_val, self.y_val, self.n_classes = X_val, y_val, n_classes
        self.patience = patience
        self.on_epoch = on_epoch
        self.history: list[EpochRecord] = []
        self.best_score = -np.inf
        self.best_epoch: int | None = None
        self._best_weights: list[np.ndarray] | None = None
        self._wait = 0
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        grad_first, grad_last = self.probe.read() if self.probe is not None else (None, None)
        loss = _finite_loss(logs, epoch + 1, "" if grad_first is None else
                            f" (mean gradient norm: first layer {grad_first:.3g}, last layer {grad_last:.3g})")
        probs = predict_proba(self.model, self.X_val)
        ev = evaluate_predictions(self.y_val, probs.argmax(axis=1), self.n_classes)
        val_loss = cross_entropy(self.y_val, probs)
        logs["val_loss"] = val_loss
        record = EpochRecord(
            epoch=epoch + 1, loss=loss, val_loss=val_loss, val_balanced_accuracy=ev.balanced_accuracy,
            val_score=ev.score, val_top_class_share=ev.top_class_share,
            learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            seconds=time.perf_counter() - self._t0, val_predicted_classes=ev.n_predicted_classes,
            grad_norm_first=grad_first, grad_norm_last=grad_last,
        )
        self.history.append(record)
        if ev.score > self.best_score:
            self.best_score, self.best_epoch, self._wait = ev.score, epoch + 1, 0
            self._best_weights = self.model.get_weights()
        else:
            self._wait += 1
            if self._wait >= self.patience and epoch + 1 >= self.min_epochs:
                self.model.stop_training = True
        self.on_epoch(record)

    def restore_best(self) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)


@dataclass
class Training:
    """One trial's training: the model, its epoch history and the epoch whose weights it kept."""

    model: keras.Model
    monitor: EpochMonitor
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def best_epoch(self) -> int | None:
        return self.monitor.best_epoch


def start_training(
    params: LstmParams, *, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
    n_classes: int, mean: np.ndarray, std: np.ndarray, patience: int, seed: int,
    on_epoch: Callable[[EpochRecord], None], min_epochs: int = 0,
) -> Training:
    """Build a fresh model and its monitor (seeded); call :func:`fit` next."""
    reset_keras()
    keras.utils.set_random_seed(seed)
    model = build_lstm(
        params, timesteps=X_train.shape[1], features=X_train.shape[2], n_classes=n_classes, mean=mean, std=std
    )
    probe = GradientProbe(model)
    model.compile(optimizer=_adam(params, probe), loss="sparse_categorical_crossentropy")
    monitor = EpochMonitor(X_val, y_val, n_classes, patience=patience, on_epoch=on_epoch, probe=probe,
                           min_epochs=min_epochs)
    return Training(model=model, monitor=monitor, history=monitor.history)


def _balanced(params: LstmParams, X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training sequences as the class-weight strategy feeds them (``oversample``: resampled)."""
    if params.class_weight == "oversample":
        idx = oversample_indices(y, seed=seed)
        return X[idx], y[idx]
    return X, y


def fit(training: Training, params: LstmParams, *, X_train: np.ndarray, y_train: np.ndarray, n_classes: int,
        epochs: int, seed: int) -> None:
    """Train with the params' class-weight strategy; always ends with the best epoch's weights."""
    lr_schedule: keras.callbacks.Callback
    if params.lr_schedule == "cosine":
        lr_schedule = _cosine_schedule(params, epochs)
    else:
        lr_schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-5,
                                                        verbose=0)
    try:
        _fit(training.model, params, X_train=X_train, y_train=y_train, n_classes=n_classes, epochs=epochs, seed=seed,
             callbacks=[training.monitor, lr_schedule])
    finally:
        training.monitor.restore_best()


def _cosine_schedule(params: LstmParams, epochs: int) -> keras.callbacks.Callback:
    """The learning rate from ``params.learning_rate`` to 0 on a cosine over ``epochs``."""
    return keras.callbacks.LearningRateScheduler(lambda epoch: cosine_learning_rate(params.learning_rate, epoch, epochs))


def _fit(model: keras.Model, params: LstmParams, *, X_train: np.ndarray, y_train: np.ndarray, n_classes: int,
         epochs: int, seed: int, callbacks: list[keras.callbacks.Callback]) -> None:
    """``model.fit`` with the params' class-weight strategy and batch size; ends with a plain Adam
    again, so the saved model loads without this module."""
    X, y = _balanced(params, X_train, y_train, seed)
    try:
        model.fit(X, y, epochs=epochs, batch_size=params.batch_size, verbose=0, shuffle=True,
                  class_weight=class_weights(y_train, params.class_weight, n_classes), callbacks=callbacks)
    finally:
        model.compile(optimizer=_adam(params), loss="sparse_categorical_crossentropy")


def fit_fixed(
    params: LstmParams, *, X_train: np.ndarray, y_train: np.ndarray, n_classes: int, mean: np.ndarray,
    std: np.ndarray, epochs: int, seed: int, stop: Callable[[int], bool],
) -> tuple[keras.Model, int]:
    """Build a fresh model (seeded) and train it for ``epochs`` epochs, its learning rate decaying
    from ``params.learning_rate`` to 0 on a cosine over those epochs, with nothing held out: the
    refit of a chosen configuration on the whole training part. There is no validation to watch, so
    no early stopping and no plateau schedule (the decay settles the last epoch's weights).

    ``stop(epochs_done)`` is asked after each epoch; True ends the training there (the time
    budget). Returns the model and the epochs it trained."""
    reset_keras()
    keras.utils.set_random_seed(seed)
    model = build_lstm(params, timesteps=X_train.shape[1], features=X_train.shape[2], n_classes=n_classes,
                       mean=mean, std=std)
    done = 0

    def after(epoch: int, logs: dict | None) -> None:
        nonlocal done
        done = epoch + 1
        _finite_loss(logs, done)
        if stop(done):
            model.stop_training = True

    _fit(model, params, X_train=X_train, y_train=y_train, n_classes=n_classes, epochs=epochs, seed=seed,
         callbacks=[_cosine_schedule(params, epochs), keras.callbacks.LambdaCallback(on_epoch_end=after)])
    return model, done
