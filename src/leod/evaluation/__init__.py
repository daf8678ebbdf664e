"""Detection evaluation: the Prophesee / RVT protocol and a class confusion matrix.

:mod:`~leod.evaluation.prophesee` reproduces the protocol every Gen1 / 1Mpx paper reports
(numbers are comparable with published tables only because nothing in it is changed);
:mod:`~leod.evaluation.confusion` adds what mAP hides, over exactly the boxes mAP scores;
:mod:`~leod.evaluation.ground_truth` is what both are scored against.
"""
