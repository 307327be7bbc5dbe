"""Model backends, one interface per role (see base.py); the registry picks them from settings."""
