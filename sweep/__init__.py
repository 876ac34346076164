"""lstm-sweep: Optuna sweeps of Keras LSTM classifiers tuned for balanced accuracy.

The Python API (:mod:`sweep.api`): ``run``, ``trials``, ``best``, ``load_champion``, ``open_study``.
They load on first use, so ``import sweep`` imports neither TensorFlow nor MLflow (nor Optuna).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["best", "load_champion", "open_study", "run", "trials"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sweep import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
