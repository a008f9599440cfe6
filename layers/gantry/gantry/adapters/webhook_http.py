"""Webhook deliveries over HTTP: DNS resolution, and a POST pinned to a checked address.

The request goes to the exact IP address the policy approved (no second lookup that a
rebinding DNS server could answer differently), with the original host in `Host` and, for
https, as the TLS server name, so certificates are still verified against the host name.
Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping

import httpx

from gantry.domain.webhooks import Target
from gantry.job_ports import DeliveryFailed


class SystemResolver:
    def resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _netloc(address: str, port: int) -> str:
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"{host}:{port}"


class HttpSender:
    def __init__(self, timeout_seconds: float) -> None:
        self._client = httpx.Client(
            timeout=timeout_seconds, follow_redirects=False, trust_env=False
        )

    def post(self, target: Target, address: str, headers: Mapping[str, str], body: bytes) -> int:
        default = 443 if target.scheme == "https" else 80
        host = target.host if target.port == default else f"{target.host}:{target.port}"
        url = f"{target.scheme}://{_netloc(address, target.port)}{target.path}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            response = self._client.post(
                url,
                content=body,
                headers={**headers, "host": host, "user-agent": "Gantry-Webhooks/1.0"},
                extensions=extensions,
            )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code
