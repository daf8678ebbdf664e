"""Models out of the pipeline: ONNX export of one recurrent step (:mod:`leod.export.onnx`)."""
