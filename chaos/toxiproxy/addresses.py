"""host:port parsing and resolution for listen and upstream addresses.

Go's ``host:port`` syntax (IPv6 in brackets). ``localhost`` resolves to
127.0.0.1 and an empty host means 127.0.0.1 too: unlike Go, this server
never binds every interface unless asked to explicitly (``0.0.0.0``).
"""

from __future__ import annotations

import ipaddress
import socket

from chaos.toxiproxy.errors import ApiError, bad_body


def split_host_port(address: str, what: str = "listen") -> tuple[str, int]:
    """``"host:port"`` -> (host, port); an ApiError 400 when malformed."""
    if not isinstance(address, str) or not address:
        raise bad_body(f"{what} address must be a non-empty host:port string")
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise bad_body(f"{what} address {address!r}: missing port in address")
        host, port_text = address[1:end], address[end + 2 :]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise bad_body(f"{what} address {address!r}: missing port in address")
        if ":" in host:
            raise bad_body(f"{what} address {address!r}: too many colons in address")
    if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
        raise bad_body(f"{what} address {address!r}: invalid port")
    if any(c.isspace() or c in "/\x00" for c in host):
        raise bad_body(f"{what} address {address!r}: invalid host")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_host(host: str, what: str = "listen") -> str:
    """An IP literal for ``host`` (localhost and "" -> 127.0.0.1)."""
    if host in ("", "localhost"):
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise bad_body(f"{what} address: lookup {host}: {exc}") from None
    return str(infos[0][4][0])


def resolve_listen(address: str) -> tuple[str, int]:
    host, port = split_host_port(address)
    return resolve_host(host), port


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (SO_REUSEADDR), or ApiError 500 with the OS error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ApiError(f"listen tcp {join_host_port(host, port)}: bind: {reason}", 500) from None
    return sock
