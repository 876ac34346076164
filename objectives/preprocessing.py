"""What the model's input layer needs to know about the training sequences: per-feature centre and
scale (the standardization built into every model), and whether the sequences are zero-padded
(which decides whether masking is searched). numpy only.
"""

from __future__ import annotations

import numpy as np

# A feature whose standard deviation exceeds its robust spread (IQR / 1.349: the standard deviation
# of a normal distribution with that IQR) this many times is heavy-tailed. LSST's fluxes: 36-182
# (a few bright events, std 250-780, while half the values lie within +-5); every other shared set
# and the synthetic ones: 0.8-5.6.
HEAVY_TAIL_RATIO = 10.0


def standardization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature centre and scale over all sequences and timesteps of ``X`` (the model's input
    standardization): mean and standard deviation, or, for a heavy-tailed feature
    (:data:`HEAVY_TAIL_RATIO`), median and robust spread.

    Scaling a heavy-tailed feature by its standard deviation squeezes the bulk of its values into
    a sliver around 0 (LSST: half of them within +-0.02) and leaves the LSTM only the outliers to
    learn from; the robust spread keeps the bulk at unit scale.
    """
    flat = X.reshape(-1, X.shape[-1]).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    q25, median, q75 = np.percentile(flat, [25, 50, 75], axis=0)
    robust = (q75 - q25) / 1.349
    heavy = (robust > 0) & (std > HEAVY_TAIL_RATIO * robust)
    centre, scale = np.where(heavy, median, mean), np.where(heavy, robust, std)
    return centre.astype(np.float32), np.where(scale > 0, scale, 1.0).astype(np.float32)


PADDED_SHARE = 0.05


def is_padded(X: np.ndarray) -> bool:
    """Whether ``X`` looks like variable-length sequences zero-padded at the end to one length.

    True when at least :data:`PADDED_SHARE` of the sequences end in a timestep whose features are
    all exactly 0 (JapaneseVowels: most of them). Real measurements are rarely exactly 0 in every
    feature, so this does not fire on ordinary series; it decides whether masking is searched.
    """
    if X.ndim != 3 or len(X) == 0:
        return False
    ends_in_zeros = np.all(X[:, -1, :] == 0, axis=-1)
    return bool(ends_in_zeros.mean() >= PADDED_SHARE)
