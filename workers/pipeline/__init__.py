"""The vision pipeline's stages as services: the Celery tasks in workers/tasks.py load a row and call these.

fetch -> embed -> entities -> groups -> scenes -> captions (captions + detail embeddings). Each stage locks
the artwork row, computes only what is missing for the active model versions, and records itself in
ProcessingStep.
"""
