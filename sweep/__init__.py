"""lstm-sweep: Optuna sweeps of Keras LSTM classifiers tuned for balanced accuracy."""

__version__ = "0.1.0"
