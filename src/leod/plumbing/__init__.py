"""Plumbing: CLI, stage runner, errors, atomic writes, progress, MLflow tracking and registry.

Nothing here shapes a stage's outputs, so dvc.yaml leaves this folder out of every stage's deps."""
