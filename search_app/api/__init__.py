"""The partner API, version 1: /api/v1/ (issue 6, docs/api.md)."""
