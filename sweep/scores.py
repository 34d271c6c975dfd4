"""Per-class scores of the early-stopped model on the test split, computed by scikit-learn:
each class's accuracy (the share of its images predicted right, torchmetrics' per-class
MulticlassAccuracy), macro-F1, and the confusion matrix the report draws."""

from __future__ import annotations

from typing import Any

import numpy as np


def class_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> dict[str, Any]:
    """`test_macro_f1`, `test_class_acc` (one value a class, None for a class with no test images)
    and `confusion_matrix` (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    labels = list(range(classes))
    per_class = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return {
        "test_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0.0)),  # over classes seen
        "test_class_acc": [None if np.isnan(a) else float(a) for a in per_class],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
