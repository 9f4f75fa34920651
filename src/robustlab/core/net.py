"""Whether a server answers, within seconds: services that retry an unreachable address for minutes (Ray's
``ray.init``, MLflow's HTTP client) are checked first, so that a wrong address is a one-line error, not a stall."""
from __future__ import annotations

import socket

CONNECT_TIMEOUT_S = 5.0


def unreachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` seconds, else the reason in words."""
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        return None
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__} within {timeout:.0f} s"
