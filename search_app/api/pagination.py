"""Cursor pagination: stable pages while partners page through a catalogue that is being added to."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class ArtworkCursorPagination(CursorPagination):
    # The primary key is unique and never changes, so no artwork is skipped or repeated between pages
    # (updated_at would move a record to another page when a worker touches it mid-walk).
    ordering = "-id"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
