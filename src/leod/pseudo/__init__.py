"""Self-training: pseudo labels from a trained detector, their filtering, tracking and quality."""
