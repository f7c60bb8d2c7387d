"""Typed application keys for every piece of app state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
