"""A real HTTP server on 127.0.0.1, in a thread, serving well- and badly-behaved image responses for the fetch
tests. Routes are registered per test: ``server.route("/a.jpg", body=..., content_type=...)``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "image/jpeg"
    status: int = 200
    location: str = ""
    declared_length: int | None = None  # a Content-Length unlike the body's; -1: none (body ends at close)
    trickle_s: float = 0.0  # pause between 1-byte writes: a server that never finishes
    fail_first: int = 0  # answer 503 this many times before serving the body
    hits: int = 0


@dataclass
class ImageServer:
    host: str
    port: int
    routes: dict[str, Route] = field(default_factory=dict)

    def route(self, path: str, **kwargs: object) -> str:
        self.routes[path] = Route(**kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


def _handler(server_state: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            route = server_state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            route.hits += 1
            if route.hits <= route.fail_first:
                self.send_error(503)
                return
            self.send_response(route.status)
            if route.location:
                self.send_header("Location", route.location)
            self.send_header("Content-Type", route.content_type)
            length = route.declared_length if route.declared_length is not None else len(route.body)
            if length >= 0:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            try:
                if route.trickle_s:
                    for i in range(len(route.body)):
                        self.wfile.write(route.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(route.trickle_s)
                else:
                    self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, which is what some tests want

    return Handler


@pytest.fixture(name="image_server")
def image_server_fixture() -> Iterator[ImageServer]:
    state = ImageServer(host="127.0.0.1", port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
