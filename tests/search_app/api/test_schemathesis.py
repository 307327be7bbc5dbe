"""Property-based: generated requests against the running API never get a 5xx, and every response conforms
to the OpenAPI schema (status codes, content types, bodies, headers)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.files.base import ContentFile
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from search_app.api.services import api_key_create
from tests.factories import ArtworkFactory, DetailFactory


@pytest.fixture(params=["read", "write"])
def api_key(request, transactional_db, settings, fake_models, clean_cache) -> str:  # type: ignore[no-untyped-def]
    """Once with a read key (generated writes must be refused, in the documented shape) and once with a write
    key (generated artworks are created, changed and deleted for real)."""
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.2, "rerank_timeout_s": 0.2}
    return api_key_create(name="schemathesis", scopes=[request.param])[1]


@pytest.fixture
def api_schema(live_api, api_key, painting):  # type: ignore[no-untyped-def]
    artworks = [ArtworkFactory(title=f"Lion {i}", iconclass=["11H(JEROME)"]) for i in range(3)]
    artworks[0].image.save("a.jpg", ContentFile(painting.read_bytes()), save=True)
    DetailFactory(artwork=artworks[0])
    loaded = schemathesis.openapi.from_url(f"{live_api}/api/v1/schema/?format=json")
    return loaded


def test_api_conforms_to_its_schema(api_schema, api_key):  # type: ignore[no-untyped-def]
    # schemathesis' own pytest plugin (schema.parametrize) does not run under this pytest; drive hypothesis
    # per operation instead and report every failing operation at once.
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case):  # type: ignore[no-untyped-def]
            # Every other built-in check stays on. positive_data_acceptance is off: rules across fields
            # (date_from <= date_to, "give q or an image") cannot be written in OpenAPI, and refusing such
            # input with a 400 is the behaviour we want.
            case.call_and_validate(
                headers={"Authorization": f"Api-Key {api_key}"}, excluded_checks=[positive_data_acceptance]
            )

        try:
            check()
        except Exception as exc:  # collect, so one run shows every operation that breaks its contract
            failures[operation.label] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
