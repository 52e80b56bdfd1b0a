"""Using a trained model: ``export`` (ONNX graph, checked against PyTorch), ``search``
(ranked matches, mAP and CMC of a labeled split) and ``gallery_index`` (its saved gallery index)."""
