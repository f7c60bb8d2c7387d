"""Redis URLs as the store takes them (redis://, rediss://, redis+sentinel://), checked without redis-py.

The config checks a URL with check_url() when it is loaded (check-config catches a typo); the store
connects with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SENTINEL_PORT = 26379
SCHEMES = ("redis://", "rediss://", "redis+sentinel://")


def check_url(url: str) -> None:
    """Raise ValueError naming what is wrong with a store URL (never repeating the URL: it may hold a password)."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"store url: the scheme must be one of {', '.join(SCHEMES)}")
    if url.startswith("redis+sentinel://"):
        parse_sentinel_url(url)
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("store url: the port is not a number, as in redis://host:6379/0") from None
    if not parts.hostname:
        raise ValueError("store url: no host, as in redis://redis:6379/0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("store url: the database is a number, as in redis://redis:6379/0")


@dataclass(frozen=True)
class SentinelTarget:
    """Where a `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]` URL points."""

    hosts: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service name, database and master credentials of a redis+sentinel:// URL."""
    rest = url.removeprefix("redis+sentinel://")
    netloc, _, path = rest.partition("/")
    path = path.partition("?")[0]
    userinfo, _, hostlist = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = [_host_port(h) for h in hostlist.split(",") if h]
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise ValueError("store url: redis+sentinel:// needs sentinel hosts and a service name, "
                         "as in redis+sentinel://host:26379/mymaster/0")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError("store url: the database of a redis+sentinel:// URL is a number, as in /mymaster/0")
    return SentinelTarget(hosts=hosts, service=unquote(parts[0]), db=int(parts[1]) if len(parts) == 2 else 0,
                          username=unquote(username) or None, password=unquote(password) or None)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep:
        host, port = text, str(SENTINEL_PORT)
    if not port.isdigit():
        raise ValueError("store url: a sentinel's port is a number, as in host:26379")
    return host.strip("[]"), int(port)
