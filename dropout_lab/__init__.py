"""dropout_lab: tune dropout in a NumPy multilayer perceptron, with Hydra, Optuna and MLflow."""

import os

# MLflow 3 sends usage telemetry over the network unless told not to; a run here makes no network
# calls of its own. Set before MLflow is imported anywhere (the writer process imports this
# package first too); a user's own MLFLOW_DISABLE_TELEMETRY setting is kept.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
