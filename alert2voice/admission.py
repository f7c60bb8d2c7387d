"""A planned webhook admitted: each page durably queued, deduplicated, or resolved (no HTTP in here)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from .alertmanager import Payload
from .dispatch import Dispatcher
from .dispatch.work import Effects
from .live import LiveConfig
from .metrics import Metrics
from .pages import Page, PageState, new_page, resolve
from .routing import Plan, PlannedPage
from .store import Store
from .store.base import OpenPage

log = logging.getLogger("alert2voice.admission")


def _group(payload: Payload) -> dict[str, Any]:
    return {"receiver": payload.receiver, "groupLabels": payload.groupLabels, "commonLabels": payload.commonLabels,
            "commonAnnotations": payload.commonAnnotations, "externalURL": payload.externalURL,
            "truncatedAlerts": payload.truncatedAlerts}


class Admission:
    """Turns a planned webhook into stored pages; what it answers is the webhook's JSON summary."""

    def __init__(self, live: LiveConfig, store: Store, metrics: Metrics, dispatcher: Dispatcher) -> None:
        self.live, self.store, self.metrics, self.dispatcher = live, store, metrics, dispatcher

    async def accept(self, payload: Payload, the_plan: Plan, now: datetime) -> dict[str, Any]:
        """Durably queue, dedup or resolve every page of a planned payload; returns the summary sent back.

        Raises StoreUnavailable (answered 503, so Alertmanager retries) before anything is promised.
        """
        config, metrics = self.live.config, self.metrics
        summary: dict[str, Any] = {"status": "ok", "pages": []}
        firing_ids = {i for p in the_plan.pages for i in p.identities}
        for planned in the_plan.pages:
            route = planned.route
            # Pages of this group whose alerts all stopped firing are resolved (unless the group was truncated,
            # when absence proves nothing). Resolving them cannot change whether this page is seen: their
            # identities, so their claims and keys, are not this page's.
            group, seen = await self._look(planned, payload.groupKey, now, group=payload.truncatedAlerts == 0,
                                           dedup=bool(planned.firing and route.escalation))
            for page in group:
                if not set(page.identities) & firing_ids and await self.resolve(page, route.send_resolved, now):
                    summary["pages"].append({"route": route.name, "page_key": page.key, "result": "resolved"})
            if not planned.firing:
                continue
            entry = {"route": route.name, "page_key": planned.key, "alerts": len(planned.firing)}
            if not route.escalation:
                entry["result"] = "no_contacts"
                metrics.page(route.name, "no_contacts").inc()
                summary["pages"].append(entry)
                continue
            claims = planned.claims
            # The common case, a resend of a paged group, is answered before any page is built.
            if seen:
                entry["result"] = "duplicate"
            else:
                page = new_page(planned, _group(payload), now)
                if not await self.dispatcher.open(page, claims, now, alerts=planned.firing):
                    entry["result"] = "duplicate"
                else:
                    entry["result"] = ("called" if page.calls else
                                       "quiet_hours" if page.state is PageState.ACTIVE else "no_contacts")
            metrics.page(route.name, entry["result"]).inc()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("page " + entry["result"], extra={"page_key": planned.key, "route": route.name,
                                                             "alerts": len(planned.firing),
                                                             "group_key": payload.groupKey})
            summary["pages"].append(entry)
        if the_plan.unrouted:
            metrics.page("", "no_route").inc()
            labels = [dict(a.labels) for a in the_plan.unrouted[:3]]
            log.warning("no route matched", extra={"labels_tried": labels, "routes": [r.name for r in config.routes],
                                                   "group_key": payload.groupKey})
            summary["unrouted"] = len(the_plan.unrouted)
        return summary

    async def _look(self, planned: PlannedPage, group_key: str, now: datetime, *, group: bool,
                    dedup: bool) -> tuple[list[OpenPage], bool]:
        """The group's unresolved pages (if `group`) and whether admit() would refuse the page (if `dedup`), in
        one store operation when both are wanted: a resend costs one round trip per planned page."""
        route, store = planned.route.name, self.store
        if group and dedup:
            return await store.look(route, group_key, planned.key, planned.claims, now)
        if group:
            return await store.by_group(route, group_key), False
        return [], dedup and await store.seen(planned.key, planned.claims, now)

    async def resolve(self, page: OpenPage, send_resolved: bool, now: datetime) -> bool:
        """Resolve a page whose alerts all stopped firing; False when it was already resolved."""
        # Another replica may write the page meanwhile (a callback, its lease): Work.change decides again.
        fresh = await self.dispatcher.ctx.work.change(page.key, lambda p, fx: self._resolve(p, send_resolved, now, fx))
        if fresh is None:
            return False
        await self.store.release(fresh.claims)
        log.debug("page resolved", extra={"page_key": fresh.key, "route": fresh.route})
        return True

    async def _resolve(self, fresh: Page | None, send_resolved: bool, now: datetime, fx: Effects) -> Page | None:
        """The decision of a resolution: the page resolved, or None when it was already."""
        if fresh is None or fresh.resolved_at is not None:
            return None
        cancelled = len(resolve(fresh, now, send_resolved=send_resolved))
        self.dispatcher.speaker.freeze_new(fresh, self.live.config)  # the resolved call, if one was queued
        fx(lambda: self.metrics.calls.labels(fresh.route, "cancelled").inc(cancelled))
        fx.save()
        return fresh
