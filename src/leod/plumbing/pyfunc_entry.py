"""Entry script of the registered pyfunc model (MLflow "models from code"); see leod.plumbing.serving."""

import mlflow

from leod.plumbing.serving import DetectorModel

mlflow.models.set_model(DetectorModel())
