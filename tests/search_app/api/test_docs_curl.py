"""docs/api.md works as written: its bash blocks run, in order, with real curl against uvicorn."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from collections_app.models import Artwork
from search_app.api.services import api_key_create
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory

DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def doc_script(*, api: str, key: str) -> str:
    blocks = BLOCK.findall(DOC.read_text())
    script = "\n".join(blocks)
    # The doc's placeholders for the site and the key are the only lines a partner edits.
    script, n_api = re.subn(r"^export API=.*$", f"export API={api}/api/v1", script, flags=re.M)
    script, n_key = re.subn(r"^export KEY=.*$", f"export KEY={key}", script, flags=re.M)
    assert (n_api, n_key) == (1, 1), "docs/api.md must set API and KEY once"
    return "set -euo pipefail\n" + script


def test_doc_has_the_whole_journey():
    script = doc_script(api="http://x", key="k")
    for step in (
        "/health/",
        "/artworks/",
        "-F image=@",
        "/status/",
        "/search/",
        ".next",
        "/iconclass/",
        "/crop/",
    ):
        assert step in script, step


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_curl_examples_run_against_a_live_server(
    live_api, painting, tmp_path, settings, fake_models, clean_cache
):
    # The doc is what is tested: search runs on the real pipeline with the search tests' table embedder.
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.5, "rerank_timeout_s": 0.5}
    _, key = api_key_create(name="docs", scopes=["write"])
    painter = ArtistFactory(name="Jan van Eyck")
    for i in range(12):
        ArtworkFactory(
            title=f"Saint Jerome with a lion {i}", date_begin=1500 + i, date_end=1510 + i
        ).artists.add(painter)
    newest = ArtworkFactory(title="Saint Jerome in his study", iconclass=["11H(JEROME)"])
    newest.image.save("jerome.jpg", ContentFile(painting.read_bytes()), save=True)
    DetailFactory(artwork=newest, label="lion", x=0.2, y=0.5, w=0.3, h=0.3)
    shutil.copy(painting, tmp_path / "painting.jpg")  # the file the doc uploads, in a scratch folder

    result = subprocess.run(
        ["bash", "-c", doc_script(api=live_api, key=key)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert (tmp_path / "detail.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG crop came back
    assert "Saint Jerome with a lion 11" in result.stdout  # the harvest loop reached the later pages
    assert "not_authenticated" in result.stdout  # the error example printed the error code
    assert not Artwork.objects.filter(
        source="my-museum", source_id="INV-1234"
    ).exists()  # created, then deleted
