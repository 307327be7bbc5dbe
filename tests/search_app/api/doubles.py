"""Test doubles for the API tests, named as such."""

from __future__ import annotations

from tests.search_app.doubles import FakeTableEmbedder
from workers.inference.base import ModelLoadError


class FakeMissingWeightsEmbedder(FakeTableEmbedder):
    """A deployment whose model files are missing: naming the model version already fails, as the offline
    embedder's does when its projection head was never trained."""

    key = "fake-missing-weights"

    @property  # type: ignore[override]
    def version(self) -> str:
        raise ModelLoadError("weights not found (FakeMissingWeightsEmbedder)")
