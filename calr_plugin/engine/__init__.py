"""Training and extraction: the trainer, its two stages, its hooks, checkpoints, features.

``trainer`` (CALRTrainer), ``run_setup`` (setup_run: seed, logging, config.yaml), ``stage1`` (one
encoder per camera), ``hooks`` (the per-epoch label step, resume checkpoints), ``checkpoint``
(MODEL.WEIGHTS into a model whose head may differ), ``features`` (the one extraction path:
training, auto settings, tools) and ``extract_engines`` (how it runs the eval graph:
CALR.EXTRACT.ENGINE, torch or ONNX Runtime).
"""
