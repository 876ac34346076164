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


def _train(params: LstmParams, epochs: int = 1, **kwargs):
    from objectives import model as lstm

    training = lstm.start_training(
        params, X_train=X, y_train=Y, X_val=X[:16], y_val=Y[:16], n_classes=3, mean=np.zeros(2, "float32"),
        std=np.ones(2, "float32"), patience=kwargs.pop("patience", 3), seed=0, on_epoch=lambda r: None, **kwargs)
    lstm.fit(training, params, X_train=X, y_train=Y, n_classes=3, epochs=epochs, seed=0)
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
