"""The architectures the search space can ask for: each builds, trains, masks and saves with Keras's
own layers, so a saved model loads without lstm-sweep."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.search_space import LstmParams

pytestmark = pytest.mark.slow  # imports TensorFlow

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 300, 2)).astype("float32")
X[:12, 200:] = 0.0  # a quarter of the sequences zero-padded at the end
Y = RNG.integers(0, 3, size=48)


def _train(params: LstmParams, epochs: int = 1, *, X_train=X, y_train=Y, mean=None, std=None, **kwargs):
    from objectives import model as lstm

    features = X_train.shape[2]
    training = lstm.start_training(
        params, X_train=X_train, y_train=y_train, X_val=X_train[:16], y_val=y_train[:16], n_classes=3,
        mean=np.zeros(features, "float32") if mean is None else mean,
        std=np.ones(features, "float32") if std is None else std,
        patience=kwargs.pop("patience", 3), seed=0, on_epoch=lambda r: None, **kwargs)
    lstm.fit(training, params, X_train=X_train, y_train=y_train, n_classes=3, epochs=epochs, seed=0)
    return training


@pytest.mark.parametrize("params", [
    LstmParams(units=8, layers=2),
    LstmParams(units=8, layers=2, bidirectional=True, pooling="attention", masking=True),
    LstmParams(units=8, layers=1, conv_filters=16, pooling="mean"),
    LstmParams(units=8, layers=1, conv_filters=16, bidirectional=True, masking=True),  # mask ignored after conv
], ids=["plain", "bi-attention-mask", "conv-mean", "conv-bi"])
def test_each_architecture_trains_records_gradients_and_reloads_to_the_same_predictions(tmp_path, params):
    import keras

    training = _train(params)
    model = training.model
    assert training.history[-1].grad_norm_first is not None and training.history[-1].grad_norm_first > 0
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(X[:8]), model.predict_on_batch(X[:8]), atol=1e-5)
    names = {layer.name for layer in model.layers}
    assert ("conv" in names) == bool(params.conv_filters)
    assert ("mask_padding" in names) == (params.masking and not params.conv_filters)
    if params.conv_filters:  # 300 steps max-pooled by 3 to 100 for the LSTM
        assert model.get_layer("lstm_1").input.shape[1] == 100


@pytest.mark.parametrize("params, features", [
    (LstmParams(units=8, layers=1, dropout=0.8, architecture="lstm_fcn"), 1),
    (LstmParams(units=8, layers=2, architecture="lstm_fcn", bidirectional=True), 1),
    (LstmParams(units=8, layers=1, architecture="lstm_fcn", pooling="attention", lr_schedule="cosine"), 2),
    (LstmParams(units=8, layers=1, architecture="lstm_fcn", fcn_filters=32), 1),
], ids=["lstm-fcn-univariate", "bilstm-fcn-2-layers", "alstm-fcn-multivariate", "lstm-fcn-narrow"])
def test_lstm_fcn_trains_saves_and_reloads_through_the_pyfunc_to_the_same_predictions(tmp_path, params, features):
    """LSTM-FCN: the FCN branch (128/k8, 256/k5, 128/k3) sees the series, the LSTM branch its
    dimension shuffle (``features`` steps of ``timesteps``-wide vectors); squeeze-and-excite blocks
    on multivariate data only (MLSTM-FCN). The MLflow pyfunc logged with every model (models from
    code, Keras layers only) loads it and answers exactly as the trained model does."""
    import json

    import mlflow

    from sweep.trial_run import PYFUNC_MODEL_CODE

    x, y = X[:, :64, :features], Y
    training = _train(params, X_train=x, y_train=y, mean=np.zeros(features, "float32"),
                      std=np.ones(features, "float32"), epochs=2)
    model = training.model
    assert len(training.history) == 2 and training.history[-1].grad_norm_first > 0
    f = params.fcn_filters  # published: 128
    assert [model.get_layer(f"fcn_conv_{i}").filters for i in (1, 2, 3)] == [f, 2 * f, f]
    assert [model.get_layer(f"fcn_conv_{i}").kernel_size for i in (1, 2, 3)] == [(8,), (5,), (3,)]
    assert model.get_layer("fcn_norm_1").momentum == 0.9  # moving statistics that keep up on small sets
    assert model.get_layer("lstm_1").input.shape[1:] == (features, 64)  # the dimension shuffle
    names = {layer.name for layer in model.layers}
    assert ({"fcn_se_1_scale", "fcn_se_2_scale"} <= names) == (features > 1) and "fcn_se_3_scale" not in names
    assert ("attention" in names) == (params.pooling == "attention")
    assert "conv" not in names and "mask_padding" not in names
    keras_path, labels_path = tmp_path / "m.keras", tmp_path / "labels.json"
    model.save(keras_path)
    labels_path.write_text(json.dumps({"labels": ["a", "b", "c"]}))
    mlflow.pyfunc.save_model(tmp_path / "pyfunc", python_model=str(PYFUNC_MODEL_CODE), pip_requirements=[],
                             artifacts={"keras_model": str(keras_path), "labels": str(labels_path)})
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")).predict(x[:8])
    expected = model.predict_on_batch(x[:8])
    np.testing.assert_allclose(served[["proba_a", "proba_b", "proba_c"]].to_numpy(), expected, atol=1e-5)
    assert list(served["label"]) == [["a", "b", "c"][i] for i in expected.argmax(axis=1)]


def test_the_cosine_schedule_decays_the_learning_rate_to_near_zero_at_the_epoch_cap():
    from objectives.model import cosine_learning_rate

    training = _train(LstmParams(units=4, layers=1, learning_rate=1e-2, lr_schedule="cosine"), epochs=4, patience=10)
    rates = [r.learning_rate for r in training.history]
    np.testing.assert_allclose(rates, [cosine_learning_rate(1e-2, e, 4) for e in range(4)], rtol=1e-5)
    np.testing.assert_allclose(rates, [1e-2, 1e-2 * (1 + np.cos(np.pi / 4)) / 2, 5e-3, 1e-2 * (1 - np.cos(np.pi / 4)) / 2],
                               rtol=1e-5)
    plateau = _train(LstmParams(units=4, layers=1, learning_rate=1e-2), epochs=2)
    assert [r.learning_rate for r in plateau.history] == pytest.approx([1e-2, 1e-2])


def test_masked_mean_pooling_ignores_the_padding_steps():
    """The masked mean is the mean of the LSTM states over the real steps only; a value of 1e-3
    where the padding was is data, not padding, and changes the answer."""
    import keras

    model = _train(LstmParams(units=8, layers=1, pooling="mean", masking=True, dropout=0.0)).model
    padded = np.zeros((1, 300, 2), "float32")
    padded[0, :150] = RNG.normal(size=(150, 2))
    states = keras.Model(model.input, model.get_layer("lstm_1").output).predict_on_batch(padded)[0]
    pooled = keras.Model(model.input, model.get_layer("mean_over_time").output).predict_on_batch(padded)[0]
    np.testing.assert_allclose(pooled, states[:150].mean(axis=0), atol=1e-5)
    assert not np.allclose(pooled, states.mean(axis=0), atol=1e-4)
    not_padding = padded.copy()
    not_padding[0, 150:160] = 1e-3
    assert not np.allclose(model.predict_on_batch(not_padding), model.predict_on_batch(padded), atol=1e-7)


def test_a_flat_score_does_not_stop_training_before_min_epochs():
    flat = _train(LstmParams(units=2, layers=1, learning_rate=1e-6), epochs=6, patience=1, min_epochs=5)
    assert len(flat.history) >= 5
    early = _train(LstmParams(units=2, layers=1, learning_rate=1e-6), epochs=6, patience=1)
    assert len(early.history) < 5


@pytest.mark.parametrize("params, lstm_input", [
    (LstmParams(units=4, layers=1, conv_filters=8, downsample=2), (75, 8)),  # 300 -> 150 -> max-pool 2 -> 75
    (LstmParams(units=4, layers=1, architecture="lstm_fcn", fcn_filters=8, downsample=4), (2, 75)),  # shuffled
], ids=["conv-down2", "lstm-fcn-down4"])
def test_downsampling_averages_the_standardized_series_inside_the_saved_model(tmp_path, params, lstm_input):
    """The model takes the series as given and averages it over windows of ``downsample`` steps
    (300 steps in windows of 4: 75); every layer after it sees the shorter series."""
    import keras

    mean, std = np.array([0.5, -1.0], "float32"), np.array([2.0, 0.5], "float32")
    model = _train(params, mean=mean, std=std).model
    assert model.get_layer("lstm_1").input.shape[1:] == lstm_input
    averaged = keras.Model(model.inputs, model.get_layer("downsample").output).predict_on_batch(X[:3])
    k = params.downsample
    expected = ((X[:3] - mean) / std).reshape(3, 300 // k, k, 2).mean(axis=2)
    np.testing.assert_allclose(averaged, expected, atol=1e-4)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(X[:8]), model.predict_on_batch(X[:8]), atol=1e-5)


def test_a_non_finite_loss_stops_training_with_the_epoch_and_the_fix():
    from objectives import model as lstm

    assert lstm._finite_loss({"loss": 0.7}, 1) == 0.7  # finite: returned as it is
    for bad in (float("nan"), float("inf")):
        with pytest.raises(lstm.NonFiniteLoss, match=rf"^training loss became {bad} at epoch 3 \(norms\); lower the learning rate"):
            lstm._finite_loss({"loss": bad}, 3, " (norms)")
