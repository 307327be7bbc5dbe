"""Writes of the partner API: issuing and using keys, deleting artworks through the API."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from collections_app.models import Artwork
from search_app.models import ApiKey, ApiScope

# last_used_at is a hint for catalogers, not an audit log: one write a minute per key is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_hash(*, raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_assign_secret(*, api_key: ApiKey) -> str:
    """Give a (new) key its token, store only the hash, and return the token: the one time it is visible."""
    prefix = secrets.token_hex(4)
    raw_key = f"{prefix}.{secrets.token_urlsafe(32)}"
    api_key.prefix = prefix
    api_key.hashed_key = api_key_hash(raw_key=raw_key)
    api_key.full_clean(exclude=["created_by"])
    api_key.save()
    return raw_key


def api_key_create(
    *, name: str, scopes: list[str], rate: str = "", created_by_id: int | None = None
) -> tuple[ApiKey, str]:
    unknown = set(scopes) - set(ApiScope.values)
    if unknown:
        raise ValidationError(f"Unknown scope(s): {', '.join(sorted(unknown))}.")
    api_key = ApiKey(name=name, scopes=sorted(set(scopes)), rate=rate, created_by_id=created_by_id)
    raw_key = api_key_assign_secret(api_key=api_key)
    return api_key, raw_key


# Keys verified recently, by their hash: a partner's every request read its key from the database
# (~0.5 ms of a search). A key changed or deactivated here is forgotten at once in this process
# (``forget_api_keys``); other web processes notice within ``SEMART_API["key_cache_s"]``.
_verified: dict[str, tuple[ApiKey, float]] = {}


def forget_api_keys() -> None:
    _verified.clear()


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key this token belongs to, or None. Compares hashes in constant time."""
    prefix, dot, _ = raw_key.partition(".")
    if not dot or not prefix:
        return None
    hashed = api_key_hash(raw_key=raw_key)
    remembered = _verified.get(hashed)
    if remembered is not None and time.monotonic() < remembered[1]:
        api_key = remembered[0]
    else:
        found = ApiKey.objects.filter(prefix=prefix).first()
        if found is None or not found.is_active:
            return None
        if not hmac.compare_digest(found.hashed_key, hashed):
            return None
        api_key = found
        ttl = float(settings.SEMART_API.get("key_cache_s", 5.0))
        if ttl > 0:
            _verified[hashed] = (api_key, time.monotonic() + ttl)
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


@transaction.atomic
def artwork_delete(*, artwork: Artwork) -> None:
    """Delete an artwork with its details, embeddings and steps (cascade), then its files once committed."""
    files = [f for f in (artwork.image, artwork.thumbnail, artwork.working_image) if f and f.name]
    storage_names = [(f.storage, str(f.name)) for f in files]
    artwork.delete()

    def remove_files() -> None:
        for storage, name in storage_names:
            storage.delete(name)

    transaction.on_commit(remove_files)
