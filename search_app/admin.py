"""Catalogers issue partner API keys here. The key is shown once, on creation; only its hash is stored."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from search_app.api.services import api_key_assign_secret, forget_api_keys
from search_app.models import ApiKey, ApiScope


class ApiKeyForm(forms.ModelForm):
    scopes = forms.TypedMultipleChoiceField(
        choices=ApiScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiScope.READ],
        help_text="Write lets the key add, change and delete artworks; it includes read.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "rate", "is_active"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scopes", "rate", "is_active", "created_at", "last_used_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at"]
    actions = ["deactivate"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        obj.created_by_id = request.user.pk
        raw_key = api_key_assign_secret(api_key=obj)
        messages.warning(
            request,
            f"The API key for {obj.name} is: {raw_key} — copy it now, it will not be shown again "
            "(only its hash is stored).",
        )

    @admin.action(description="Deactivate the selected keys")
    def deactivate(self, request: HttpRequest, queryset: Any) -> None:
        n = queryset.update(is_active=False)
        forget_api_keys()
        self.message_user(request, f"{n} key(s) deactivated.")
