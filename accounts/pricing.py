"""What a turn would have cost on the OpenAI API: a dated price table per model.

The table is shipped in the repo (accounts/data/model_prices.json) and overridden by operators in the admin
(ModelPrice rows, which win over the file for the same model and date). Each turn is priced once, when its
RequestLog row is written, at the price in force when it ran: a later price never rewrites the past.

The Responses usage object counts the cached tokens inside `input_tokens` and the reasoning tokens inside
`output_tokens`, so a turn costs (input - cached) x input price + cached x cached-input price + output x output
price. Reasoning is already in the output count: adding it again would bill it twice.
"""

import bisect
import functools
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings

SHIPPED_PRICES = Path(__file__).resolve().parent / "data" / "model_prices.json"
_PER_MILLION = Decimal(1_000_000)
# RequestLog.cost_usd keeps 10 places: one token at $0.025 per million is $0.000000025.
_COST_PLACES = Decimal("1e-10")


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model from one day (00:00 UTC) on."""

    model: str
    effective_from: date
    input: Decimal
    cached_input: Decimal
    output: Decimal
    source: str  # "shipped" (the repo's file) or "admin" (a ModelPrice row)

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> Decimal:
        cached = min(cached_tokens, input_tokens)
        dollars = (input_tokens - cached) * self.input + cached * self.cached_input + output_tokens * self.output
        return (dollars / _PER_MILLION).quantize(_COST_PLACES)


class PriceTable:
    """Every model's prices in date order; `at` finds the one in force at a moment."""

    def __init__(self, prices: Iterable[Price]):
        self._prices: dict[str, list[Price]] = {}
        for price in sorted(prices, key=lambda p: (p.model, p.effective_from)):
            self._prices.setdefault(price.model, []).append(price)
        self._days = {model: [p.effective_from for p in prices] for model, prices in self._prices.items()}

    def at(self, model: str, moment: datetime) -> Price | None:
        days = self._days.get(model)
        if not days:
            return None
        index = bisect.bisect_right(days, moment.astimezone(UTC).date()) - 1
        return self._prices[model][index] if index >= 0 else None

    def in_force(self, moment: datetime) -> list[Price]:
        """The price of each model at `moment` (models whose first price is later are left out)."""
        return [price for model in sorted(self._prices) if (price := self.at(model, moment))]

    def cost(self, model: str, moment: datetime, input_tokens: int, cached_tokens: int, output_tokens: int):
        """The turn's cost in USD; None when it used tokens and its model had no price then (unpriced, which is
        not free). A turn that used no tokens cost nothing, whatever its model."""
        price = self.at(model, moment)
        if price is None:
            return Decimal(0) if input_tokens == 0 and output_tokens == 0 else None
        return price.cost(input_tokens, cached_tokens, output_tokens)


@functools.cache
def shipped_prices() -> tuple[Price, ...]:
    """The repo's price file (read once per process)."""
    data = json.loads(SHIPPED_PRICES.read_text(), parse_float=Decimal)
    return tuple(
        Price(
            model=model,
            effective_from=date.fromisoformat(entry["effective_from"]),
            input=Decimal(entry["input"]),
            cached_input=Decimal(entry["cached_input"]),
            output=Decimal(entry["output"]),
            source="shipped",
        )
        for model, entries in data["models"].items()
        for entry in entries
    )


def load_table() -> PriceTable:
    """The shipped prices with the admin's rows over them (one query)."""
    from .models import ModelPrice

    prices = {(p.model, p.effective_from): p for p in shipped_prices()}
    for row in ModelPrice.objects.all():
        prices[(row.model, row.effective_from)] = row.as_price()
    return PriceTable(prices.values())


# The turn path prices every turn: it reads the table at most every POOLER_PRICES_CACHE_SECONDS per process,
# not once per turn. An admin change in this process is seen at once (forget), in the others within that time.
_cached: tuple[PriceTable | None, float] = (None, 0.0)
_loading = threading.Lock()


def table() -> PriceTable:
    """The price table of this process, read again once it is older than POOLER_PRICES_CACHE_SECONDS."""
    global _cached
    current = _cached[0]
    if (fresh := fresh_table()) is not None:
        return fresh
    # One thread reads it again; the others go on with the table it replaces, a moment older.
    if not _loading.acquire(blocking=current is None):
        return current
    try:
        if _cached[0] is current:
            started = time.monotonic()
            _cached = (load_table(), started)
        return _cached[0]
    finally:
        _loading.release()


def fresh_table() -> PriceTable | None:
    """The price table when this process holds one young enough, else None (never reads the database)."""
    current, loaded_at = _cached
    if current is not None and time.monotonic() - loaded_at < settings.POOLER_PRICES_CACHE_SECONDS:
        return current
    return None


def forget() -> None:
    """Read the table again at the next turn (after an operator changed a price)."""
    global _cached
    _cached = (None, 0.0)
