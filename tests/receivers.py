"""Webhook receivers that misbehave, each a real server on loopback: one that never answers, one that answers
late, one that drips its answer a byte at a time, one that holds the first request until told; and outside cron
monitors that speak healthchecks', Sentry's and Cronitor's check-in protocols."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def _accepting(port: int | None, serve: Any) -> Iterator[int]:
    """A listening socket on loopback; each connection it accepts is handed to `serve(conn)` in a thread."""
    listener = socket.create_server(("127.0.0.1", port or 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            conn.close()


@contextmanager
def never_answering(port: int | None = None) -> Iterator[tuple[str, list[float]]]:
    """Accepts every connection and never answers: a webhook that hangs. Yields its URL and when each came."""
    came: list[float] = []

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        came.append(time.monotonic())
        stop.wait(120)

    with _accepting(port, serve) as bound:
        yield f"http://127.0.0.1:{bound}/hook/secret-token", came


@contextmanager
def dripping(every: float = 4.0) -> Iterator[tuple[str, list[float]]]:
    """Reads the request, then answers one byte every `every` seconds, for ever. Yields its URL and when the
    connections closed (the sender gave up)."""
    closed: list[float] = []

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" * 100:
                conn.sendall(bytes([byte]))
                if stop.wait(every):
                    return
        except OSError:
            closed.append(time.monotonic())

    with _accepting(None, serve) as bound:
        yield f"http://127.0.0.1:{bound}/hook/secret-token", closed


@dataclass
class Posts:
    """The JSON bodies POSTed to a receiver, and when each arrived (time.monotonic())."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    first: threading.Event = field(default_factory=threading.Event)  # the first POST has arrived
    release: threading.Event = field(default_factory=threading.Event)  # a held first POST may end

    def ids(self) -> list[str]:
        return [body["id"] for body in self.bodies]


@contextmanager
def receiver(
    *, answer_after: float = 0.0, hold_first: bool = False, on_post: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[tuple[str, Posts]]:
    """A webhook that records every POST, calls `on_post(body)` before it answers, and answers 200 after
    `answer_after` seconds. With `hold_first`, the first POST gets no answer at all: it is held until
    `posts.release` is set, then its connection is dropped."""
    posts = Posts()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                posts.bodies.append(body)
                posts.times.append(time.monotonic())
                first = len(posts.bodies) == 1
            if on_post:
                on_post(body)
            posts.first.set()
            if first and hold_first:
                posts.release.wait(60)
                self.close_connection = True
                return
            time.sleep(answer_after)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/secret-token", posts
    finally:
        posts.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class Signals:
    """What a monitor received, in order: (its word for the signal, the id that pairs a run's signals)."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # requests that did not speak the protocol

    def pairs(self) -> dict[str, list[str]]:
        """The words received for each pairing id, in order."""
        paired: dict[str, list[str]] = {}
        for word, pair in self.seen:
            paired.setdefault(pair, []).append(word)
        return paired


def _hc(path: str, query: dict[str, str]) -> tuple[str, str] | None:
    """healthchecks.io: /ping/<uuid>[/start|/fail], `rid` a UUID."""
    match = re.fullmatch(r"/ping/[0-9a-f-]{36}(/start|/fail)?", path)
    if not match or not _uuid(query.get("rid", "")):
        return None
    return {"/start": "start", "/fail": "fail", None: "success"}[match[1]], query["rid"]


def _sentry(path: str, query: dict[str, str]) -> tuple[str, str] | None:
    """Sentry Crons: /api/<project>/cron/<slug>/<key>/ with `status` and a `check_in_id` UUID."""
    if not re.fullmatch(r"/api/\d+/cron/[\w-]+/\w+/", path) or not _uuid(query.get("check_in_id", "")):
        return None
    return (query["status"], query["check_in_id"]) if query.get("status") in ("in_progress", "ok", "error") else None


def _cronitor(path: str, query: dict[str, str]) -> tuple[str, str] | None:
    """Cronitor: /ping/<key>/<monitor> (or /p/...) with `state` and `series`."""
    if not re.fullmatch(r"/(ping|p)/\w+/[\w-]+", path) or not query.get("series"):
        return None
    return (query["state"], query["series"]) if query.get("state") in ("run", "complete", "fail") else None


def _uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


MONITORS = {
    "healthchecks": ("/ping/0b5c4c16-5a4f-4d0e-9a51-8e0f3f9d8a11", _hc),
    "sentry": ("/api/0/cron/nightly/examplePublicKey/", _sentry),
    "cronitor": ("/ping/apikey123/nightly", _cronitor),
}


@contextmanager
def monitor(protocol: str) -> Iterator[tuple[str, Signals]]:
    """An outside cron monitor on loopback that speaks `protocol` (healthchecks, sentry, cronitor): it records each
    check-in it understands and answers 200, and answers 400 to anything else. Yields its check-in URL."""
    path, parse = MONITORS[protocol]
    signals = Signals()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            understood = parse(parts.path, dict(urllib.parse.parse_qsl(parts.query)))
            with lock:
                signals.seen.append(understood) if understood else signals.refused.append(self.path)
            self.send_response(200 if understood else 400)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", signals
    finally:
        server.shutdown()
        server.server_close()
