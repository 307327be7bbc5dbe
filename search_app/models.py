"""Partner API keys. search_app owns the partner API, so it owns who may call it.

A key is shown once when it is issued and stored only as the SHA-256 of the whole token: the token carries
256 bits of randomness, so a fast hash is enough (no password stretching needed), and the short public prefix
finds the row without scanning.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models

RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


def validate_rate(value: str) -> None:
    if value and not RATE.match(value):
        raise ValidationError("A rate looks like 100/minute, 5000/hour or 10/s.", code="rate")


class ApiScope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"


class ApiKey(models.Model):
    name = models.CharField(max_length=200, help_text="Who holds the key: a partner, an app, a researcher.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scopes = ArrayField(
        models.CharField(max_length=10, choices=ApiScope.choices),
        default=list,
        blank=True,
        size=len(ApiScope),
    )
    rate = models.CharField(
        max_length=40, blank=True, validators=[validate_rate], help_text="e.g. 1000/hour; empty: the default."
    )
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        # write implies read: a partner that may edit may also look.
        return scope in self.scopes or (scope == ApiScope.READ and ApiScope.WRITE in self.scopes)
