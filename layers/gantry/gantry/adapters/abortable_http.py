"""Buffered HTTP/1.1 calls made on the calling thread, yet abortable from any other one.

A blocking request costs about half of the same request made on an event loop in another
thread (no loop hop, no task machinery), which is most of what a proxied call adds. It
stays stoppable: every socket read and write is bounded by what is left of the call's
deadline, and `abort()` (a hedge that lost, a client that left) shuts the socket down, so
the blocked read returns at once and the server sees the connection closed.

Connections are pooled (keep-alive) through httpcore; failures are raised as httpx's, like
the async client's; proxies come from the environment (`HTTPS_PROXY`, `NO_PROXY`, ...) as
httpx's clients take them.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from gantry.domain.deadlines import CancelToken

# Request headers as sent: (name, value) byte pairs, built once by the caller.
WireHeaders = list[tuple[bytes, bytes]]

# httpcore's failures as httpx's (most specific first), which the error mapping knows.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


class Aborted(Exception):
    """The call was aborted from another thread."""


class _Call:
    """One request in flight: its deadline, and the connection it is using right now."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._stream: httpcore.NetworkStream | None = None
        self.aborted = False

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def remaining(self, bound: float | None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the call's deadline passed")
        return left if bound is None else min(bound, left)

    def using(self, stream: httpcore.NetworkStream) -> None:
        with self._lock:
            if self.aborted:
                raise httpcore.ReadError("the call was aborted")
            self._stream = stream

    def release(self) -> None:
        """The call is over: a late abort must not touch the connection, back in the pool."""
        with self._lock:
            self._stream = None

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _call() -> _Call | None:
    call: _Call | None = getattr(_current, "call", None)
    return call


class _Stream(httpcore.NetworkStream):
    """A connection whose reads and writes belong to the calling thread's call."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        call = _call()
        if call is not None:
            call.using(self)
            timeout = call.remaining(timeout)
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        call = _call()
        if call is not None:
            call.using(self)
            timeout = call.remaining(timeout)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        call = _call()
        if call is not None:
            timeout = call.remaining(timeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        call = _call()
        if call is not None:
            timeout = call.remaining(timeout)
        stream = _Stream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )
        if call is not None:
            try:
                call.using(stream)
            except httpcore.ReadError:
                stream.close()
                raise
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _env_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for this URL, as httpx's clients read it."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _proxy(url: str) -> httpcore.Proxy:
    parsed = httpx.URL(url)
    if not parsed.username:
        return httpcore.Proxy(url)
    auth = (parsed.username, parsed.password or "")
    return httpcore.Proxy(str(parsed.copy_with(username=None, password=None)), auth=auth)


class AbortableClient:
    """A pooled HTTP/1.1 client whose requests block the calling thread."""

    def __init__(
        self, *, max_connections: int, connect_timeout: float, keepalive_expiry: float = 5.0
    ) -> None:
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._keepalive_expiry = keepalive_expiry
        self._lock = threading.Lock()
        # One pool per (proxy, TLS): plain HTTP never pays for loading the CA bundle.
        self._pools: dict[tuple[str | None, bool], httpcore.ConnectionPool] = {}
        self._routes: dict[str, tuple[str | None, bool]] = {}

    def _pool(self, url: str) -> httpcore.ConnectionPool:
        route = self._routes.get(url)
        if route is None:
            parsed = httpx.URL(url)
            route = self._routes[url] = (_env_proxy(parsed), parsed.scheme == "https")
        pool = self._pools.get(route)
        if pool is None:
            with self._lock:
                pool = self._pools.get(route)
                if pool is None:
                    proxy, tls = route
                    pool = httpcore.ConnectionPool(
                        ssl_context=httpx.create_ssl_context() if tls else None,
                        proxy=_proxy(proxy) if proxy else None,
                        max_connections=self._max_connections,
                        max_keepalive_connections=self._max_connections,
                        keepalive_expiry=self._keepalive_expiry,
                        network_backend=_Backend(),
                    )
                    self._pools[route] = pool
        return pool

    def post(
        self,
        url: str,
        headers: WireHeaders,
        content: bytes,
        seconds: float,
        cancel: CancelToken | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """POST and read the whole answer within `seconds` (TimeoutError after that);
        cancelling `cancel` aborts the call (Aborted). Other failures are httpx's errors.
        The answer's header names are lower case."""
        call = _Call(seconds)
        timeouts = {
            "connect": min(seconds, self._connect_timeout),
            "read": seconds,
            "write": seconds,
            "pool": seconds,
        }
        unregister = cancel.on_cancel(call.abort) if cancel is not None else None
        _current.call = call
        try:
            response = self._pool(url).request(
                b"POST", url, headers=headers, content=content, extensions={"timeout": timeouts}
            )
        except Exception as error:
            if call.aborted:
                raise Aborted() from None
            if call.expired:
                raise TimeoutError() from None
            for core, mapped in _ERRORS:
                if isinstance(error, core):
                    raise mapped(str(error)) from error
            raise
        finally:
            _current.call = None
            call.release()
            if unregister is not None:
                unregister()
        answer = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        return response.status, answer, response.content

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
