"""Macro-averaged F1 as an ``evaluate`` metric module, shipped inside hf_reduce so it loads offline by path."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Macro F1: the unweighted mean over classes of 2 * precision * recall / (precision + recall)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    num_classes (int, optional): number of classes; classes absent from both lists count as F1 = 0
        only when they are within range(num_classes). Defaults to the labels seen.
Returns:
    f1 (float): macro-averaged F1 in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_classes=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = np.arange(num_classes) if num_classes else np.union1d(predictions, references)
        scores = []
        for c in classes:
            tp = np.sum((predictions == c) & (references == c))
            fp = np.sum((predictions == c) & (references != c))
            fn = np.sum((predictions != c) & (references == c))
            scores.append(2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 0.0)
        return {"f1": float(np.mean(scores)) if scores else 0.0}
