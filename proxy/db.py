"""The database steps of the turn paths (HTTP and websocket), awaitable (the steps before a turn's first
byte are in turns.py, each one trip to a db thread)."""

from . import accounting, limits, routing
from .dbthread import on_db_thread

claim_account = on_db_thread(limits.claim_account)
plan_turn = on_db_thread(routing.plan_turn)
mark_failure = on_db_thread(accounting.mark_failure)
held_error = on_db_thread(routing.held_error)
