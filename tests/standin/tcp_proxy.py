"""A loopback TCP proxy whose connections a test can cut at any moment: a real lost connection (RST), as when a
load balancer, a pod restart or the network drops a GDS Arrow stream mid-load."""

from __future__ import annotations

import socket
import struct
import threading


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_port`; `cut()` resets every open connection (new ones still work)."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.cuts = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self) -> TcpProxy:
        self._spawn(self._accept)
        return self

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, name="standin-proxy", daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Reset every open connection (SO_LINGER 0: the peer sees a connection reset, not a clean close)."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
            self.cuts += 1
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD)  # wakes a pump blocked in recv(); sends nothing
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.listener.close()
        self.cut()
        for t in self._threads:
            t.join(5)
