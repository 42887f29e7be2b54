"""The database steps of the turn paths (HTTP and websocket), awaitable."""

from . import accounting, limits, routing
from .dbthread import on_db_thread

admit = on_db_thread(limits.admit)
plan_turn = on_db_thread(routing.plan_turn)
mark_failure = on_db_thread(accounting.mark_failure)
held_error = on_db_thread(routing.held_error)
