"""scikit-learn's bundled handwritten digits as a tiny real image dataset that needs no download.

``sklearn.datasets.load_digits`` holds 1,797 8x8 images of the digits 0-9 (the UCI "Optical
Recognition of Handwritten Digits" test set: E. Alpaydin and C. Kaynak, 1998), each pixel a count 0..16
of inked cells in a 4x4 block. Here they become uint8 RGB, 0..16 scaled to 0..255, so the digit stays
white on black as in the source.
"""

from __future__ import annotations

import numpy as np

from .cifar import ArrayDataset
from .folder import stratified_indices

__all__ = ["load_digits_arrays"]

_SOURCE_MAX = 16


def load_digits_arrays(test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
    """The digits as an :class:`ArrayDataset` of ``(N, 8, 8, 3)`` uint8 images, classes ``"0"``.. ``"9"``.

    The train/test split is stratified and deterministic: the same rule as
    :func:`plainnet.data.folder.stratified_split` applied to the sample positions.

    Raises:
        DataError: ``test_fraction`` is not in [0, 1).
    """
    # Imported here: scikit-learn is slow to import and only this loader needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = np.rint(bunch.images * (255.0 / _SOURCE_MAX)).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    labels = bunch.target.astype(np.int64)
    train, _, test = stratified_indices(labels, val_fraction=0.0, test_fraction=test_fraction, seed=seed)
    train, test = np.asarray(train, dtype=np.intp), np.asarray(test, dtype=np.intp)
    return ArrayDataset(
        classes=tuple(str(d) for d in bunch.target_names),
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
    )
