"""The MLflow pyfunc model lstm-sweep logs: raw sequences in, the user's own labels out.

This file is logged *as code* with every model (MLflow's models-from-code), so a served or
loaded model needs MLflow, Keras/TensorFlow, numpy and pandas, but not lstm-sweep itself. It must
not import anything from the ``sweep`` or ``objectives`` packages.

Artifacts: ``keras_model`` (the trained network, standardization included as its first layer)
and ``labels`` (a JSON file: ``{"labels": [...]}``, output column ``i`` is ``labels[i]``). A fold
ensemble (the re-training's fold models of one configuration) has ``keras_model``,
``keras_model_1``, ... and predicts the mean of their class probabilities.

``predict`` takes a float array ``[n, timesteps, features]`` (a nested list works too, and a
DataFrame with one row per sequence and ``timesteps x features`` columns in time-major order)
and returns a DataFrame: ``label`` (the predicted label, in the user's original values) and one
``proba_<label>`` column per class.
"""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


class LstmSweepClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import keras

        names = sorted((k for k in context.artifacts if k.startswith("keras_model")), key=lambda k: (len(k), k))
        self.models = [keras.models.load_model(context.artifacts[k], compile=False) for k in names]
        with open(context.artifacts["labels"]) as fh:
            self.labels = json.load(fh)["labels"]
        _, self.timesteps, self.features = self.models[0].input_shape

    def sequences(self, model_input: Any) -> np.ndarray:
        """The input as float32 ``[n, timesteps, features]``; ValueError naming the problem otherwise."""
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input.to_numpy()
            if model_input.ndim == 2 and model_input.shape[1] == self.timesteps * self.features:
                model_input = model_input.reshape(-1, self.timesteps, self.features)
        X = np.asarray(model_input, dtype=np.float32)
        if X.ndim == 2 and self.features == 1:
            X = X[:, :, None]
        if X.ndim != 3 or X.shape[1:] != (self.timesteps, self.features):
            raise ValueError(f"expected sequences of shape [n, {self.timesteps}, {self.features}] "
                             f"(timesteps, features), got {list(X.shape)}")
        if not np.isfinite(X).all():
            bad = int(np.argwhere(~np.isfinite(X))[0][0])
            raise ValueError(f"sequence {bad} has NaN or infinite values; fill or drop them first")
        return X

    # np.ndarray is a hint MLflow does not turn into a schema (the logged signature is the schema);
    # without a hint, MLflow 3 warns on every load. Lists and DataFrames are accepted all the same.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        X = self.sequences(model_input)
        probabilities = np.zeros((len(X), len(self.labels)))
        if len(X):
            probabilities = np.mean([np.asarray(m.predict(X, batch_size=512, verbose=0)) for m in self.models], axis=0)
        frame = pd.DataFrame({"label": pd.Series([self.labels[i] for i in probabilities.argmax(axis=1)], dtype=object)})
        for i, label in enumerate(self.labels):
            frame[f"proba_{label}"] = probabilities[:, i].astype(np.float64)
        return frame


mlflow.models.set_model(LstmSweepClassifier())
