"""Production model backends: real checkpoints through Hugging Face transformers and torch.

Nothing here is imported unless settings choose one of these backends (see ``registry.py``); each backend
imports torch and transformers inside ``_load``, so the web process never pays for them. Which checkpoint a
backend loads, and where from, is decided in :mod:`workers.inference.production.checkpoints`.
"""
