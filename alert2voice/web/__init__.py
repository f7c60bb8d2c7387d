"""The HTTP service: create_app() wires the store, the dispatcher and the handlers (webhook, callbacks, ops)."""

from .app import create_app, drain

__all__ = ["create_app", "drain"]
