"""Everything the simulator remembers, in memory: accounts (tokens, quota windows, faults), the request log, stats."""

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from . import tokens

DEFAULT_MODELS = ["gpt-6.1-sol", "gpt-5.5", "gpt-5.2", "gpt-5.1-codex", "gpt-5.1-codex-mini"]
# Faults that refuse a request before any byte, and those that shape a stream that was admitted.
REFUSING_FAULTS = {"status", "rate_limit", "expire_token"}
STREAM_FAULTS = {"slow", "cut"}
# Faults of the auth server's /oauth/token (both grants) and of wham/usage.
TOKEN_FAULTS = {"token_slow", "token_malformed"}
FAULT_KINDS = REFUSING_FAULTS | STREAM_FAULTS | TOKEN_FAULTS | {"refresh_invalid_grant", "usage_malformed"}
_RESPONSE_IDS_KEPT = 5000
# Websocket only: `no_rate_limits` sends the next turn without its `codex.rate_limits` event; `hang_up` closes
# the connection (1000) right after the next turn, as the backend does with idle or aged connections.
NO_RATE_LIMITS, HANG_UP = "no_rate_limits", "hang_up"
FAULT_KINDS |= {NO_RATE_LIMITS, HANG_UP}


@dataclass
class Window:
    minutes: int
    used_percent: float = 0.0
    reset_at: float = 0.0

    def roll(self, now: float) -> None:
        """A window whose reset time passed starts over, empty."""
        if self.reset_at <= now:
            self.used_percent = 0.0
            self.reset_at = now + self.minutes * 60

    def reset_after(self, now: float) -> int:
        return max(0, int(round(self.reset_at - now)))

    def describe(self, name: str, now: float) -> dict:
        return {
            f"{name}_used_percent": self.used_percent,
            f"{name}_window_minutes": self.minutes,
            f"{name}_reset_at": int(self.reset_at),
            f"{name}_reset_after_seconds": self.reset_after(now),
        }


@dataclass
class Account:
    account_id: str
    access_token: str
    refresh_token: str
    email: str
    plan_type: str = "plus"
    percent_per_turn: float = 1.0
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    deltas: int = 8
    access_token_expires_in: int = 3600  # lifetime of the access tokens this simulator issues
    access_expires_at: float | None = None
    verify_encrypted_content: bool = True
    primary: Window = field(default_factory=lambda: Window(300))
    secondary: Window = field(default_factory=lambda: Window(10080))
    faults: list[dict] = field(default_factory=list)
    id_token: str = ""
    refresh_count: int = 0
    turn_count: int = 0
    response_ids: deque = field(default_factory=lambda: deque(maxlen=_RESPONSE_IDS_KEPT))

    def token_expired(self, now: float) -> bool:
        return self.access_expires_at is not None and self.access_expires_at <= now

    def exhausted_window(self, now: float) -> Window | None:
        self.primary.roll(now)
        self.secondary.roll(now)
        spent = [w for w in (self.primary, self.secondary) if w.used_percent >= 100.0]
        return max(spent, key=lambda w: w.reset_at) if spent else None

    def spend_turn(self) -> None:
        self.turn_count += 1
        for window in (self.primary, self.secondary):
            window.used_percent = min(100.0, window.used_percent + self.percent_per_turn)

    def take_fault(self, kinds: set[str]) -> dict | None:
        """Consume one use of the first scripted fault of one of `kinds`."""
        for fault in self.faults:
            if fault["kind"] in kinds:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def rotate_tokens(self, refreshed: bool = True) -> None:
        self.access_token = tokens.access_token(self.account_id, self.plan_type, self.access_token_expires_in)
        self.refresh_token = tokens.refresh_token()
        self.id_token = tokens.id_token(self.account_id, self.plan_type, self.email)
        self.access_expires_at = time.time() + self.access_token_expires_in
        self.refresh_count += refreshed

    def token_response(self) -> dict:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "id_token": self.id_token,
            "expires_in": self.access_token_expires_in,
            "token_type": "Bearer",
            "scope": "openid profile email offline_access",
        }

    def describe(self, now: float) -> dict:
        self.primary.roll(now)
        self.secondary.roll(now)
        return {
            "account_id": self.account_id,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "id_token": self.id_token,
            "email": self.email,
            "plan_type": self.plan_type,
            "access_token_expires_at": self.access_expires_at,
            "access_token_expires_in": self.access_token_expires_in,
            "percent_per_turn": self.percent_per_turn,
            "models": self.models,
            "deltas": self.deltas,
            "verify_encrypted_content": self.verify_encrypted_content,
            "refresh_count": self.refresh_count,
            "turn_count": self.turn_count,
            "faults": self.faults,
            **self.primary.describe("primary", now),
            **self.secondary.describe("secondary", now),
        }


def normalize_fault(raw: dict) -> dict:
    kind = raw.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
    fault = {"count": 1, **raw}
    fault["count"] = int(fault["count"])
    if "delay" in fault:  # the documented short name of the delay before the first byte
        fault.setdefault("first_byte_delay", fault.pop("delay"))
    return fault


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.open_streams = self.max_open_streams = 0
        self.open_websockets = self.max_open_websockets = 0
        self.turns = 0

    def stream_opened(self) -> None:
        self.open_streams += 1
        self.turns += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)

    def stream_closed(self) -> None:
        self.open_streams -= 1

    def websocket_opened(self) -> None:
        self.open_websockets += 1
        self.max_open_websockets = max(self.max_open_websockets, self.open_websockets)

    def websocket_closed(self) -> None:
        self.open_websockets -= 1

    def as_dict(self) -> dict:
        return {
            "open_streams": self.open_streams,
            "max_open_streams": self.max_open_streams,
            "open_websockets": self.open_websockets,
            "max_open_websockets": self.max_open_websockets,
            "turns": self.turns,
        }


# Session headers worth recording (values), in the spellings of current and older CLIs.
SESSION_HEADERS = (
    "session-id",
    "thread-id",
    "session_id",
    "conversation_id",
    "x-client-request-id",
    "x-codex-window-id",
    "originator",
    "openai-beta",
    "chatgpt-account-id",
)


class RequestLog:
    """Metadata of every request seen (never bodies); entries are dicts updated in place as a stream ends."""

    def __init__(self, limit: int = 200_000) -> None:
        self.entries: deque[dict] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def add(self, path: str, kind: str, transport: str, request_headers=None, **fields) -> dict:
        headers = {
            name: request_headers[name]
            for name in SESSION_HEADERS
            if request_headers is not None and name in request_headers
        }
        entry = {
            "id": next(self._ids),
            "time": time.time(),
            "path": path,
            "kind": kind,
            "transport": transport,
            "account_id": None,
            "model": None,
            "headers": headers,
            "session_id": headers.get("session-id") or headers.get("session_id"),
            "header_names": sorted(request_headers.keys()) if request_headers is not None else [],
            "prompt_cache_key": None,
            "previous_response_id": None,
            "status": None,
            "outcome": None,
            "error_code": None,
            **fields,
        }
        self.entries.append(entry)
        return entry

    def matching(self, filters: dict) -> list[dict]:
        return [e for e in self.entries if all(str(e.get(k)) == v for k, v in filters.items())]

    def clear(self) -> None:
        self.entries.clear()


# The device-code login (`codex login --device-auth`): the CLI says a code expires in 15 minutes and polls at
# the `interval` the usercode answer gives (the real server sends "5", a string).
DEVICE_CODE_LIFETIME = 15 * 60
DEVICE_DEFAULTS = {"interval": 5, "expires_in": DEVICE_CODE_LIFETIME}


@dataclass
class DeviceAuth:
    """One device-code sign-in, from `/api/accounts/deviceauth/usercode` until its code is handed out."""

    device_auth_id: str
    user_code: str
    issuer: str  # the base URL the client used: the code exchange's redirect_uri is {issuer}/deviceauth/callback
    expires_at: float
    status: str = "pending"
    account_id: str | None = None
    slow_downs: int = 0  # polls still to answer `slow_down` (scripted through the control API)

    def status_at(self, now: float) -> str:
        return "expired" if self.status == "pending" and self.expires_at <= now else self.status

    def describe(self, now: float) -> dict:
        return {
            "user_code": self.user_code,
            "device_auth_id": self.device_auth_id,
            "status": self.status_at(now),
            "account_id": self.account_id,
            "expires_in": max(0, int(self.expires_at - now)),
            "slow_downs": self.slow_downs,
        }


# Switches of the simulated backend as a whole (`/_sim/config`). The legacy `/responses/compact` is retired
# upstream (404); tests of a gateway's old path turn it back on.
DEFAULT_CONFIG = {"compact_endpoint": False}


class SimState:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.config = dict(DEFAULT_CONFIG)
        self.accounts: dict[str, Account] = {}
        self.auth_codes: dict[str, dict] = {}
        self.next_login: dict | None = None
        self.device = dict(DEVICE_DEFAULTS)
        self.device_auths: dict[str, DeviceAuth] = {}  # by user code
        self.log = RequestLog()
        self.stats = Stats()

        self._by_token: dict[str, str] = {}  # any token ever issued -> account id (checked on lookup)

    def index_tokens(self, account: Account) -> None:
        self._by_token[account.access_token] = account.account_id
        self._by_token[account.refresh_token] = account.account_id

    def _owner(self, token: str) -> Account | None:
        account_id = self._by_token.get(token)
        return self.accounts.get(account_id) if account_id else None

    def account_by_token(self, access_token: str) -> Account | None:
        account = self._owner(access_token)
        return account if account is not None and account.access_token == access_token else None

    def account_by_refresh_token(self, refresh_token: str) -> Account | None:
        account = self._owner(refresh_token)
        return account if account is not None and account.refresh_token == refresh_token else None

    def former_owner(self, token: str) -> Account | None:
        """The account a rotated-away (or current) token belonged to."""
        return self._owner(token)
