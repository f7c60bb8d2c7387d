"""RecordingProvider: an in-memory Provider for unit tests; records requests, replays scripted errors."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from .base import Accepted, CallRequest, CallStatus, ProviderError


@dataclass(frozen=True)
class Placed:
    """One request the fake received, with what it answered."""

    mode: str  # "message" or "interactive"
    request: CallRequest
    accepted: Accepted | None
    error: ProviderError | None


class RecordingProvider:
    """Records every call request; raises scripted errors first, then accepts with ids msg-1, msg-2, ..."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget requests, scripted errors, statuses and the gate."""
        self.placed: list[Placed] = []
        self.status_queries: list[str] = []
        self.statuses: dict[str, CallStatus] = {}
        # When set, requests wait for it: lets a test hold calls "in flight".
        self.gate: asyncio.Event | None = None
        self.held: list[CallRequest] = []  # requests waiting at the gate now
        self.arrived = asyncio.Event()  # set when a request reaches the gate
        self._errors: deque[ProviderError] = deque()
        self._by_key: dict[str, Accepted] = {}
        self._next_id = 0

    @property
    def requests(self) -> list[CallRequest]:
        """Return every request received, failed ones included, in order."""
        return [p.request for p in self.placed]

    @property
    def accepted(self) -> list[Accepted]:
        """Return every distinct accepted call, in order."""
        seen: dict[str, Accepted] = {}
        for p in self.placed:
            if p.accepted is not None:
                seen.setdefault(p.accepted.message_id, p.accepted)
        return list(seen.values())

    def fail_next(self, error: ProviderError, times: int = 1) -> None:
        """Make the next `times` requests (after those already scripted) raise `error`."""
        self._errors.extend([error] * times)

    def set_status(self, message_id: str, status: CallStatus) -> None:
        """Set what call_status returns for an id."""
        self.statuses[message_id] = status

    async def place_call(self, request: CallRequest) -> Accepted:
        """Record a play-and-hang-up call; raise the next scripted error or accept it."""
        return await self._place("message", request)

    async def place_interactive_call(self, request: CallRequest) -> Accepted:
        """Record a programmable call; raise the next scripted error or accept it."""
        return await self._place("interactive", request)

    async def call_status(self, message_id: str) -> CallStatus | None:
        """Record the query; return the status set for the id, else None (like a 404)."""
        self.status_queries.append(message_id)
        return self.statuses.get(message_id)

    async def _place(self, mode: str, request: CallRequest) -> Accepted:
        if self.gate is not None:
            self.held.append(request)
            self.arrived.set()
            try:
                await self.gate.wait()
            finally:
                self.held.remove(request)
        if self._errors:
            error = self._errors.popleft()
            self.placed.append(Placed(mode, request, None, error))
            raise error
        key = request.effective_idempotency_key
        # Like a provider honouring Idempotency-Key: a retry of an accepted attempt is the same call.
        accepted = self._by_key.get(key) if key else None
        if accepted is None:
            self._next_id += 1
            accepted = Accepted(f"msg-{self._next_id}", request.correlation_id, None)
            if key:
                self._by_key[key] = accepted
        self.placed.append(Placed(mode, request, accepted, None))
        return accepted
