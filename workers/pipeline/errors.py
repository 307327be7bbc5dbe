"""The two kinds of failure a stage can meet, so tasks retry only what may succeed on a second try."""

from __future__ import annotations

import socket

import redis.exceptions
import urllib3.exceptions
from django.db import OperationalError


class PermanentStageError(Exception):
    """The input or the model is wrong (corrupt image, refused URL, model that will not load): retrying cannot
    help. The message is shown to catalogers, so it says what is wrong in plain words."""


class TransientFetchError(Exception):
    """The image server answered 429/5xx or dropped the connection: worth another try later."""


class StorageFullError(Exception):
    """The disk (or quota) holding media is full: worth another try once someone has made room."""


# Errors a retry may cure. Anything else is a bug or bad input and fails the step at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientFetchError,
    StorageFullError,
    socket.timeout,
    TimeoutError,
    ConnectionResetError,
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.NewConnectionError,
    OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
