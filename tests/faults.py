"""Faults injected for real: a TCP proxy on loopback that can cut a link, and a tiny full disk.

``TcpProxy`` sits between the sweep and a server (PostgreSQL, an ``mlflow server``): clients
connect to ``proxy.port``, every byte is forwarded to the target. ``cut()`` closes every open
connection and refuses new ones (the port is closed: connect() gets ECONNREFUSED, as when the
server is down); ``restore()`` listens again on the same port. Run as a script it proxies until
killed (``python tests/faults.py --target 127.0.0.1:5432``; prints the port).

``small_tmpfs(path, size)`` mounts a tmpfs of ``size`` at ``path`` (root only): a disk that fills.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class TcpProxy:
    """A loopback TCP forwarder whose link can be cut and restored."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server: socket.socket | None = None
        self._stopped = False
        self.cuts = 0
        self.port = port
        self._listen()

    # -- control ---------------------------------------------------------------------------------
    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones until :meth:`restore`."""
        with self._lock:
            server, self._server = self._server, None
            conns, self._conns = self._conns, set()
            self.cuts += 1
        if server is not None:
            _close(server)
        for conn in conns:
            _close(conn)

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        with self._lock:
            if self._server is not None or self._stopped:
                return
        self._listen()

    def close(self) -> None:
        self._stopped = True
        self.cut()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def __enter__(self) -> TcpProxy:  # noqa: PYI034 - not subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------
    def _listen(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                server.bind(("127.0.0.1", self.port))
                break
            except OSError:  # the old socket's port is still being released
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.listen(64)
        self.port = server.getsockname()[1]
        with self._lock:
            self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True, name="proxy-accept").start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # cut or closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._server is not server:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True, name="proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def can_mount() -> str | None:
    """None if this process may mount a tmpfs, else why not (for a skip reason)."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs (a disk that fills) needs root"
    probe = Path(f"/tmp/lstm-sweep-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            return f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"2m"``) mounted at ``path`` for the duration (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    """Make a mounted tmpfs read-only (writes then fail with EROFS, also as root)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(path: Path) -> None:
    """Fill the file system holding ``path`` to the last byte."""
    fd = os.open(path / "ballast", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="loopback TCP proxy (kill it to stop)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port_text = args.target.rpartition(":")
    proxy = TcpProxy(host, int(port_text), port=args.port)
    print(proxy.port, flush=True)
    threading.Event().wait()
