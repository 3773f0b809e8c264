"""Webhook receivers that misbehave, each a real server on loopback: one that never answers, one that answers
late, one that drips its answer a byte at a time, one that holds the first request until told."""

from __future__ import annotations

import json
import socket
import threading
import time
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
