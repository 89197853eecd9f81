"""The MLflow pyfunc wrapper of a saved network, logged as a "model from code" (no pickling).

MLflow runs this file when the model is loaded; ``set_model`` registers the wrapper, whose
``load_context`` reads the ``weights`` artifact (the ``model.npz`` file, ``allow_pickle=False``).
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


class MLPPyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` returns class probabilities (N, n_classes) for features (N, D), dropout off.

    Inputs are raw features: the training set's standardisation, when there was one, is applied here.
    """

    def load_context(self, context) -> None:
        from dropout_lab.model import MLP

        self.model = MLP.load(context.artifacts["weights"])
        self.mean = self.scale = None
        if "preprocess" in context.artifacts:
            with np.load(context.artifacts["preprocess"], allow_pickle=False) as f:
                self.mean, self.scale = f["mean"], f["scale"]

    def predict(self, context, model_input, params=None):
        X = np.asarray(model_input, dtype=np.float64)
        if self.mean is not None:
            X = (X - self.mean) / self.scale
        return self.model.predict_proba(X.astype(self.model.dtype))


set_model(MLPPyfuncModel())
