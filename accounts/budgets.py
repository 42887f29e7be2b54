"""A key's budgets: what its turns may spend over rolling windows, counted from RequestLog rows.

A budget is a window (5h, day, week, month: the last 5 hours, 24 hours, 7 days, 30 days), a kind (total, input or
output tokens, or API-equivalent cost in USD, see pricing.py), an amount and, optionally, one model (the model the
turn ran on). Windows roll: a turn's spend leaves its window exactly one window after the turn was written, so
"when can I go on" is when the oldest turns that push the window over leave it. Only finished turns are counted
(their rows): see README "Key policy" for what turns running side by side can add.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db.models import F, Q, Sum, Window
from django.db.models.functions import Coalesce

from .models import PoolApiKey, RequestLog

WINDOWS = {
    "5h": timedelta(hours=5),
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
}
# The RequestLog column each kind sums.
KINDS = {"tokens": "total_tokens", "input_tokens": "input_tokens", "output_tokens": "output_tokens", "cost": "cost_usd"}
_WORDS = {"tokens": "tokens", "input_tokens": "input tokens", "output_tokens": "output tokens", "cost": "USD"}


class BudgetError(ValueError):
    """A budget that cannot be understood (the message says which part and why)."""


@dataclass(frozen=True)
class Budget:
    window: str
    kind: str
    amount: Decimal
    model: str = ""

    @property
    def span(self) -> timedelta:
        return WINDOWS[self.window]

    @property
    def column(self) -> str:
        return KINDS[self.kind]

    def describe(self) -> str:
        amount = f"${self.amount:,.2f}" if self.kind == "cost" else f"{int(self.amount):,} {_WORDS[self.kind]}"
        on = f" of {self.model}" if self.model else ""
        return f"{amount}{on} per {self.window} for this key"

    def as_dict(self) -> dict:
        amount = float(self.amount) if self.kind == "cost" else int(self.amount)
        model = {"model": self.model} if self.model else {}
        return {"window": self.window, "kind": self.kind, "amount": amount, **model}

    def rows(self, key: PoolApiKey, now: datetime):
        rows = RequestLog.objects.filter(api_key=key, created_at__gt=now - self.span)
        return rows.filter(model=self.model) if self.model else rows


def parse_spec(spec: str) -> Budget:
    """`window:kind:amount[:model]`, as `create_api_key --budget` takes it (e.g. `day:cost:5.00`)."""
    parts = spec.split(":", 3)
    if len(parts) < 3:
        raise BudgetError(f"budget {spec!r}: expected window:kind:amount[:model], e.g. 5h:tokens:200000")
    window, kind, amount, *model = parts
    return _budget({"window": window, "kind": kind, "amount": amount, "model": model[0] if model else ""})


def _budget(data) -> Budget:
    if not isinstance(data, dict):
        raise BudgetError(f"budget {data!r}: expected an object with window, kind and amount")
    window, kind, model = data.get("window"), data.get("kind"), data.get("model") or ""
    if window not in WINDOWS:
        raise BudgetError(f"budget window {window!r}: use one of {', '.join(WINDOWS)}")
    if kind not in KINDS:
        raise BudgetError(f"budget kind {kind!r}: use one of {', '.join(KINDS)}")
    try:
        amount = Decimal(str(data.get("amount")))
    except InvalidOperation:
        raise BudgetError(f"budget amount {data.get('amount')!r}: not a number") from None
    if not amount.is_finite() or amount <= 0 or (kind != "cost" and amount != amount.to_integral_value()):
        expected = "number" if kind == "cost" else "integer"
        raise BudgetError(f"budget amount {data.get('amount')!r}: expected a positive {expected}")
    if not isinstance(model, str) or len(model) > 100:
        raise BudgetError(f"budget model {model!r}: not a model name")
    return Budget(window, kind, amount, model)


def parse_budgets(data) -> list[Budget]:
    if not isinstance(data, list):
        raise BudgetError("budgets: expected a list")
    return [_budget(item) for item in data]


def key_budgets(key: PoolApiKey) -> list[Budget]:
    """The key's budgets (its own, else its pool's defaults); a stored entry that does not parse is skipped."""
    found = []
    for item in key.budget_list():
        try:
            found.append(_budget(item))
        except BudgetError:
            continue
    return found


def spent_aggregates(key_ref, budgets: list[Budget], now: datetime) -> dict:
    """One SUM per budget over the key's rows in the longest window (`key_ref` a key or an OuterRef to one):
    a single scan of the (api_key, created_at) index, whatever the number of budgets."""
    return {
        f"budget_{index}": Coalesce(
            Sum(
                budget.column,
                filter=Q(created_at__gt=now - budget.span, **({"model": budget.model} if budget.model else {})),
            ),
            0,
            output_field=RequestLog._meta.get_field(budget.column),
        )
        for index, budget in enumerate(budgets)
    }


def spent(key: PoolApiKey, budgets: list[Budget], now: datetime) -> list[Decimal]:
    """What the key's finished turns spent of each budget (one query)."""
    if not budgets:
        return []
    longest = max(b.span for b in budgets)
    sums = RequestLog.objects.filter(api_key=key, created_at__gt=now - longest).aggregate(
        **spent_aggregates(key, budgets, now)
    )
    return [Decimal(sums[f"budget_{index}"] or 0) for index in range(len(budgets))]


def available_at(key: PoolApiKey, budget: Budget, now: datetime) -> datetime:
    """When enough of a spent budget's window has passed for the window to hold less than its amount: the
    newest row whose spend, with everything newer, reaches the amount leaves the window then."""
    newer = Window(Sum(budget.column), order_by=[F("created_at").desc(), F("id").desc()])
    rows = (
        budget.rows(key, now)
        .annotate(newer=newer)
        .filter(newer__gte=budget.amount)
        .order_by("-created_at", "-id")
        .values_list("created_at", flat=True)[:1]
    )
    found = list(rows)
    return (found[0] if found else now) + budget.span


def oldest_in_window(key: PoolApiKey, budget: Budget, now: datetime) -> datetime | None:
    return budget.rows(key, now).order_by("created_at").values_list("created_at", flat=True).first()


def report(key: PoolApiKey, now: datetime) -> list[dict]:
    """Each budget of the key with what is used, what is left and when it resets (GET /v1/usage)."""
    budgets = key_budgets(key)
    out = []
    for budget, used in zip(budgets, spent(key, budgets, now), strict=True):
        if used >= budget.amount:
            resets = available_at(key, budget, now)
        else:
            oldest = oldest_in_window(key, budget, now) if used else None
            resets = oldest + budget.span if oldest else None
        number = float if budget.kind == "cost" else int
        out.append(
            {
                **budget.as_dict(),
                "window_seconds": int(budget.span.total_seconds()),
                "used": number(used),
                "remaining": number(max(Decimal(0), budget.amount - used)),
                "exhausted": used >= budget.amount,
                # When spend next leaves the window (a spent budget: when a turn can pass again); null: nothing used.
                "resets_at": resets.isoformat() if resets else None,
            }
        )
    return out
