"""Using a trained model: ``export`` (ONNX graph, checked against PyTorch) and ``search``
(gallery index, ranked matches, mAP and CMC of a labeled split)."""
