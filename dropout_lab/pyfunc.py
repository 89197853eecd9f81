"""The MLflow pyfunc wrapper of a saved network (imported only when MLflow logs a model)."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np


class MLPPyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` returns class probabilities (N, n_classes) for features (N, D), dropout off.

    Inputs are the standardised features the network was trained on (as in ``summary.json``'s split).
    """

    def load_context(self, context) -> None:
        from dropout_lab.model import MLP

        self.model = MLP.load(context.artifacts["weights"])

    def predict(self, context, model_input, params=None):
        X = np.asarray(model_input, dtype=self.model.dtype)
        return self.model.predict_proba(X)
