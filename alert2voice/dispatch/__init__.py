"""The dispatcher in rooms: the loop and its leases (loop), one page moved on (stepping), the one way a page
changes (work), what may go out when (limits, storms), sending (placing), how calls end (outcomes), what is
said and frozen (speaking), shared dependencies (context), page locks."""

from .limits import RateLimiter, tiers
from .locks import KeyedLocks
from .loop import Dispatcher
from .placing import Backoff

__all__ = ["Backoff", "Dispatcher", "KeyedLocks", "RateLimiter", "tiers"]
