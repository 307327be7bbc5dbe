"""GET /search.json, the async endpoint of the pages' infinite scroll."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from search_app.query_encoding import remember_text_vector
from tests.factories import ArtworkFactory, DetailFactory
from tests.search_app.conftest import MODEL_KEY, embed_artwork, embed_detail, unit


@pytest.mark.django_db
def test_bad_input_is_a_400_with_a_reason(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/search.json", {"q": "angel", "level": "galaxy"})
    assert response.status_code == 400
    assert "level must be one of" in response.json()["error"]
    assert client.get("/search.json", {"q": "angel", "year_from": "soon"}).status_code == 400
    assert client.post("/search.json", {"q": "angel"}).status_code == 405


@pytest.mark.django_db
def test_a_search_answers_in_json_with_regions_scores_and_paging(
    client, fake_models, clean_cache, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.SEARCH = {**settings.SEARCH, "rerank_timeout_s": 0.3}
    remember_text_vector("halo", unit([1, 0, 0, 0]), model_key=MODEL_KEY)
    for i in range(3):
        artwork = ArtworkFactory(title=f"Icon {i}")
        embed_artwork(artwork, [0.1 * i, 1, 0, 0])
        detail = DetailFactory(artwork=artwork, label="halo", x=0.1 * i)
        embed_detail(detail, [1, 0.1 * i, 0, 0])

    body = client.get("/search.json", {"q": "halo -blue", "limit": 2}).json()

    assert body["query"]["text"] == "halo" and body["query"]["exclude"] == ["blue"]
    assert len(body["hits"]) == 2 and body["has_more"] is True and body["next_offset"] == 2
    first = body["hits"][0]
    assert first["detail"]["label"] == "halo" and len(first["detail"]["box"]) == 4
    assert first["score"] >= body["hits"][1]["score"]
    assert "rerank unavailable" in body["degraded"]  # no worker in this test


def test_the_web_process_imports_no_model_runtime() -> None:
    code = (
        "import sys, django; django.setup(); import semart_site.urls\n"
        "from search_app import pipeline, search_json, query_encoding\n"
        "from workers.inference.base import ModelLoadError\n"
        "try:\n    query_encoding.embedder_model_key()\nexcept ModelLoadError:\n    pass\n"
        "runtimes = ('torch', 'onnxruntime', 'transformers', 'cv2', 'ai_edge_litert')\n"
        "print(sorted(m for m in runtimes if m in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "semart_site.settings.test"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
