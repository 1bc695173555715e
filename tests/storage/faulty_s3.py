"""A real HTTP proxy in front of the loopback S3 server that fails on purpose, and counts what reaches it.

It answers an error (503 SlowDown by default) to the first N matching requests, cuts a body off half
way and resets the connection, or plays dead (``down``). The faults are real HTTP on a real socket, so
what is tested is botocore's retries and the stores' own, not a stand-in.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}


@dataclass
class Fault:
    method: str  # "GET", "HEAD", "PUT", ... or "*"
    path_contains: str
    times: int  # how many matching requests it hits
    status: int = 503
    code: str = "SlowDown"
    cut_body: bool = False  # forward, then send half the body and reset the connection


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class FaultyS3:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.down = False  # every request answered 503 ServiceUnavailable
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, path_contains: str, times: int, **kwargs: object) -> Fault:
        fault = Fault(method, path_contains, times, **kwargs)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, method: str = "*", path_contains: str = "") -> int:
        with self._lock:
            return sum(1 for s in self.seen if method in ("*", s.method) and path_contains in s.path)

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self.faults.clear()

    def _take(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        """Record the request; the fault it meets, if any (each use spends one of its ``times``)."""
        with self._lock:
            self.seen.append(Seen(method, path, headers))
            for fault in self.faults:
                if fault.times > 0 and fault.method in ("*", method) and fault.path_contains in path:
                    fault.times -= 1
                    return fault
        return None

    def __enter__(self) -> FaultyS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(proxy: FaultyS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for botocore's uploads

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = bytearray()
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer_error(self, status: int, code: str) -> None:
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>injected by the test proxy</Message><RequestId>faulty</RequestId></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            body = self._body()
            headers = {k: v for k, v in self.headers.items()}
            fault = proxy._take(self.command, self.path, headers)
            if proxy.down:
                self._answer_error(503, "ServiceUnavailable")
                return
            if fault is not None and not fault.cut_body:
                self._answer_error(fault.status, fault.code)
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=forwarded)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                declared = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", declared or "0")
                self.end_headers()
            finally:
                upstream.close()
            if self.command == "HEAD":
                return
            if fault is not None:  # cut_body: half of it, then a reset (RST) instead of the rest
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(0.2)  # the half is read before the reset, which would discard it unread
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()  # linger 0: the peer gets a reset, not an orderly close
                self.close_connection = True
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    return Handler
