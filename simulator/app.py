"""The simulator's ASGI app: the Codex backend routes, the auth server and the `/_sim/` control API."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from . import backend, control, oauth
from .state import SimState
from .websocket import responses_websocket

CODEX = "/backend-api/codex"


async def _not_found(request: Request, exc) -> JSONResponse:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            Route(f"{CODEX}/responses", backend.responses, methods=["POST"]),
            WebSocketRoute(f"{CODEX}/responses", responses_websocket),
            Route(f"{CODEX}/responses/compact", backend.compact, methods=["POST"]),
            Route(f"{CODEX}/models", backend.models, methods=["GET"]),
            Route(f"{CODEX}/realtime/calls", backend.realtime_call, methods=["POST"]),
            Route("/backend-api/wham/usage", backend.wham_usage, methods=["GET"]),
            Route("/oauth/authorize", oauth.authorize, methods=["GET"]),
            Route("/oauth/token", oauth.token, methods=["POST"]),
            Route("/api/accounts/deviceauth/usercode", oauth.device_usercode, methods=["POST"]),
            Route("/api/accounts/deviceauth/token", oauth.device_token, methods=["POST"]),
            Route("/_sim/accounts", control.register_account, methods=["POST"]),
            Route("/_sim/accounts/{account_id}", control.account_detail, methods=["GET", "PATCH", "DELETE"]),
            Route("/_sim/requests", control.request_log, methods=["GET", "DELETE"]),
            Route("/_sim/config", control.config, methods=["GET", "PATCH"]),
            Route("/_sim/stats", control.stats, methods=["GET"]),
            Route("/_sim/stats/reset", control.reset_stats, methods=["POST"]),
            Route("/_sim/reset", control.reset, methods=["POST"]),
            Route("/_sim/next_login", control.next_login, methods=["POST"]),
            Route("/_sim/device", control.device, methods=["GET", "PATCH"]),
            Route("/_sim/device/{action}", control.device_action, methods=["POST"]),
        ],
        exception_handlers={404: _not_found},
    )
    app.state.sim = SimState()
    return app
