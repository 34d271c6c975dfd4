"""Per-class scores of the early-stopped model on the test split: each class's accuracy (the share
of its images predicted right, torchmetrics' per-class MulticlassAccuracy), macro-F1, and the
confusion matrix the report draws.

They are a few lines of arithmetic on the confusion matrix, computed here rather than by
scikit-learn, whose import costs every run ~2 s of its start-up; a property test holds them to
scikit-learn's `recall_score`, `f1_score` and `confusion_matrix` on random labels."""

from __future__ import annotations

from typing import Any

import numpy as np


def class_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> dict[str, Any]:
    """`test_macro_f1` (over the classes seen in either array, as scikit-learn averages it),
    `test_class_acc` (one value a class, None for a class with no test images) and
    `confusion_matrix` (rows: true class, columns: predicted)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    matrix = np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)
    hits, true, said = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    seen = (true + said) > 0
    f1 = 2 * hits[seen] / (true + said)[seen]
    return {
        "test_macro_f1": float(f1.mean()) if seen.any() else 0.0,
        "test_class_acc": [float(h / n) if n else None for h, n in zip(hits, true)],
        "confusion_matrix": matrix.tolist(),
    }
