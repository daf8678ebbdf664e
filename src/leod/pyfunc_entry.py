"""Entry script of the registered pyfunc model (MLflow "models from code"); see leod.serving."""

import mlflow

from leod.serving import DetectorModel

mlflow.models.set_model(DetectorModel())
