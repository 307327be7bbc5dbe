from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from search_app.api.services import api_key_authenticate, api_key_create, api_key_hash, forget_api_keys
from search_app.models import ApiKey

pytestmark = pytest.mark.django_db


def test_raw_key_is_not_stored_only_its_sha256():
    api_key, raw_key = api_key_create(name="partner", scopes=["read"])
    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert raw_key not in {str(v) for v in row.values()}
    assert all(raw_key.split(".", 1)[1] not in str(v) for v in row.values())
    assert row["hashed_key"] == api_key_hash(raw_key=raw_key)
    assert raw_key.startswith(row["prefix"] + ".")
    assert len(raw_key) > 40  # 256 bits of secret after the prefix


def test_authenticate_accepts_the_key_and_rejects_tampered_or_inactive_ones():
    api_key, raw_key = api_key_create(name="partner", scopes=["read"])
    assert api_key_authenticate(raw_key=raw_key) == api_key
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is not None
    assert api_key_authenticate(raw_key=raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")) is None
    assert api_key_authenticate(raw_key="nodot") is None
    ApiKey.objects.filter(pk=api_key.pk).update(is_active=False)  # as another process deactivates it:
    assert api_key_authenticate(raw_key=raw_key) == api_key, "trusted from memory for key_cache_s"
    forget_api_keys()  # the memory lapses
    assert api_key_authenticate(raw_key=raw_key) is None


def test_a_key_deactivated_in_this_process_stops_working_at_once():
    api_key, raw_key = api_key_create(name="partner", scopes=["read"])
    assert api_key_authenticate(raw_key=raw_key) == api_key
    api_key.is_active = False
    api_key.save()
    assert api_key_authenticate(raw_key=raw_key) is None


def test_unknown_scope_is_refused():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        api_key_create(name="partner", scopes=["admin"])


def test_admin_shows_the_key_once_and_stores_its_hash(client):
    admin = get_user_model().objects.create_superuser("cataloger", "c@example.org", "pw")
    client.force_login(admin)
    response = client.post(
        "/admin/search_app/apikey/add/",
        {"name": "Rijksmuseum app", "scopes": ["read", "write"], "rate": "100/minute", "is_active": "on"},
        follow=True,
    )
    assert response.status_code == 200 and response.redirect_chain, response.content.decode()[:2000]
    key = ApiKey.objects.get(name="Rijksmuseum app")
    shown = [str(m) for m in response.context["messages"]]
    raw_key = next(word for m in shown for word in m.split() if word.startswith(key.prefix + "."))
    assert raw_key in response.content.decode()
    assert api_key_authenticate(raw_key=raw_key) == key
    assert key.scopes == ["read", "write"] and key.rate == "100/minute"
    # The change page never shows the key again.
    page = client.get(f"/admin/search_app/apikey/{key.pk}/change/").content.decode()
    assert raw_key not in page and key.hashed_key not in page


def test_admin_refuses_a_malformed_rate(client):
    admin = get_user_model().objects.create_superuser("cataloger", "c@example.org", "pw")
    client.force_login(admin)
    response = client.post("/admin/search_app/apikey/add/", {"name": "x", "scopes": ["read"], "rate": "lots"})
    assert response.status_code == 200 and not ApiKey.objects.exists()
