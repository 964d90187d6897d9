"""FaultyNetwork: a TEST DOUBLE of a bad network between boto3 and the S3 server.

A TCP proxy on 127.0.0.1 that forwards bytes to the real (moto) server and
injects real faults on the wire, so the retries under test are botocore's own
reacting to real broken sockets:

- ``cut_uploads(n, after)``: the next ``n`` connections that carry more than
  ``after`` bytes towards the server are reset (TCP RST both ways) right
  there, in the middle of the request body;
- ``cut_downloads(n, after)``: the next ``n`` connections that carry more than
  ``after`` bytes back from the server are reset in the middle of the response
  body (after the status and headers have arrived: botocore does not retry
  that itself);
- ``slow_down(n)``: the next ``n`` requests get ``503 SlowDown`` from the
  proxy itself, as S3 answers when throttling, and never reach the server.

``cuts`` and ``throttled`` count what it did.
"""

from __future__ import annotations

import socket
import struct
import threading
from urllib.parse import urlparse

SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reset(sock: socket.socket) -> None:
    """Break the connection now: the peer sees it reset (or closed) mid-message.

    ``shutdown`` first, so that another thread blocked in ``recv`` on this socket
    wakes up and the kernel lets the socket go at once.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class FaultyNetwork:
    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._cuts_left = 0
        self._cut_after = 0
        self._slow_downs_left = 0
        self._download_cuts_left = 0
        self._download_cut_after = 0
        self.cuts = 0
        self.throttled = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="faulty-network", daemon=True)
        self._thread.start()

    def cut_uploads(self, n: int, after: int) -> None:
        with self._lock:
            self._cuts_left, self._cut_after = n, after

    def cut_downloads(self, n: int, after: int) -> None:
        with self._lock:
            self._download_cuts_left, self._download_cut_after = n, after

    def slow_down(self, n: int) -> None:
        with self._lock:
            self._slow_downs_left = n

    def close(self) -> None:
        self._stopped = True
        self._listener.close()

    # ------------------------------------------------------------ the proxy

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            throttle = self._slow_downs_left > 0
            if throttle:
                self._slow_downs_left -= 1
        if throttle:
            self._answer_slow_down(client)
            return
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            _reset(client)
            return
        done = threading.Event()
        back = threading.Thread(target=self._pump_back, args=(server, client, done), daemon=True)
        back.start()
        self._pump_up(client, server)
        back.join(30)

    def _pump_up(self, client: socket.socket, server: socket.socket) -> None:
        sent = 0
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    server.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            sent += len(data)
            if self._should_cut(sent):
                _reset(client)
                _reset(server)
                return
            try:
                server.sendall(data)
            except OSError:
                _reset(client)
                return

    def _should_cut(self, sent: int) -> bool:
        with self._lock:
            if self._cuts_left > 0 and sent > self._cut_after:
                self._cuts_left -= 1
                self.cuts += 1
                return True
        return False

    def _should_cut_download(self, received: int) -> bool:
        with self._lock:
            if self._download_cuts_left > 0 and received > self._download_cut_after:
                self._download_cuts_left -= 1
                self.cuts += 1
                return True
        return False

    def _pump_back(self, server: socket.socket, client: socket.socket, done: threading.Event) -> None:
        received = 0
        try:
            while data := server.recv(65536):
                received += len(data)
                if self._should_cut_download(received):
                    client.sendall(data[: len(data) // 2])  # part of this piece, then a reset
                    _reset(client)
                    break
                client.sendall(data)
        except OSError:
            pass
        for sock in (client, server):  # shutdown wakes the other pump, blocked in recv
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        done.set()

    def _answer_slow_down(self, client: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
            if fields.get(b"expect", b"").strip() != b"100-continue":  # else the body waits for "100 Continue"
                length = int(fields.get(b"content-length", b"0"))
                while len(body) < length and (chunk := client.recv(65536)):
                    body += chunk
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                + f"Content-Length: {len(SLOW_DOWN)}\r\n\r\n".encode()
                + SLOW_DOWN
            )
            with self._lock:
                self.throttled += 1
        except OSError:
            pass
        finally:
            client.close()
