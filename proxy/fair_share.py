"""Fair share of accounts' concurrent turns between keys (README, "Key policy").

A turn that finds every account that could serve it at its `max_concurrent` cap waits for a slot, up to
POOLER_FAIR_SHARE_WAIT seconds, trying again at growing intervals, before a 429 `pool_at_capacity`. While it
waits a SlotWaiter row says so, and limits.claim_account gives no freed slot to a key while a waiting key of
the pool holds fewer: the waiting key with the fewest slots gets the next one. Turns on accounts below their
caps, or without caps, never come here.
"""

import asyncio
import math
import random
import time

from django.conf import settings

from . import limits
from .accounting import Turn
from .dbthread import run_to_end
from .errors import AccountsBusy

# Tries again after 50 ms, then 1.5 times later each time up to half a second (jittered, so that the turns
# waiting in N processes do not try together).
_FIRST_POLL, _LONGEST_POLL = 0.05, 0.5
# A turn refused after its wait has waited its share: its client may queue again at once.
_RETRY_AFTER = 1


class Queue:
    """One turn's wait for a slot. `leave()` whatever happens: a client gone while waiting leaves no row."""

    def __init__(self, turn: Turn):
        self.turn = turn
        self._since: float | None = None
        self._waiter_id: int | None = None
        self._poll = _FIRST_POLL

    @property
    def waiting(self) -> bool:
        return self._since is not None

    async def wait(self) -> bool:
        """Sleep until the turn's next try for a slot; False once it has waited its bound."""
        bound = settings.POOLER_FAIR_SHARE_WAIT
        if self._since is None:
            self._since = time.monotonic()
            if bound <= 0:
                return False
            self._waiter_id = await run_to_end(limits.wait_for_slot, self.turn.key, self.turn.request_id, bound)
        left = self._since + bound - time.monotonic()
        if left > 0:
            await asyncio.sleep(min(left, self._poll * random.uniform(0.5, 1.0)))
            self._poll = min(self._poll * 1.5, _LONGEST_POLL)
        self._note_wait()
        return left > 0

    async def leave(self) -> None:
        """End the wait (at once when a slot is taken: the row holds other keys back while it is there)."""
        if self._waiter_id is not None:
            self._note_wait()
            waiter_id, self._waiter_id = self._waiter_id, None
            await run_to_end(limits.stop_waiting, waiter_id)

    def refusal(self) -> AccountsBusy:
        waited = math.ceil((self.turn.queued_ms or 0) / 1000)
        return AccountsBusy(
            f"Every account of this pool that could serve this turn is at its concurrent-turn cap (waited {waited} "
            f"seconds for a slot). Try again in {_RETRY_AFTER} seconds.",
            retry_after=_RETRY_AFTER,
        )

    def _note_wait(self) -> None:
        self.turn.queued_ms = int((time.monotonic() - self._since) * 1000)
