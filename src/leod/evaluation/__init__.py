"""Detection evaluation: the Prophesee / RVT protocol and a class confusion matrix.

* :mod:`leod.evaluation.prophesee` reproduces the protocol that every Gen1 / 1Mpx paper
  (RVT, LEOD) reports: filter small and early boxes, pair predictions with label
  timestamps, and run COCO mAP (faster-coco-eval, pinned to pycocotools by the tests).
  Numbers from here are comparable with published tables only because nothing in that
  protocol is changed.
* :mod:`leod.evaluation.confusion` adds what mAP hides: which classes are confused with
  each other and how many objects are missed or hallucinated, written in the long CSV
  format that ``dvc plots`` confusion templates read.

Both take the same inputs (per-sequence lists of :data:`leod.labels.boxes.BOX_DTYPE`
arrays for ground truth and predictions) and share one pairing of boxes to
evaluation images, so the confusion matrix counts exactly the boxes that mAP scores.
"""
