"""The database steps of the turn paths (HTTP and websocket), awaitable."""

from . import accounting, limits, routing
from .dbthread import on_db_thread

admit = on_db_thread(limits.admit)
claim_account = on_db_thread(limits.claim_account)
release = on_db_thread(limits.release)
plan_turn = on_db_thread(routing.plan_turn)
current_account = on_db_thread(routing.current_account)
mark_failure = on_db_thread(accounting.mark_failure)
held_error = on_db_thread(routing.held_error)
