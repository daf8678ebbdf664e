"""Training infrastructure: checkpoints that resume bit-exactly on CPU (model, optimiser,
scheduler and every RNG), loadable without unpickling arbitrary objects."""
