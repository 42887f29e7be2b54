"""Runtime views: /backend-api/codex/* and /v1/*."""

from .errors import NotFound, error_response


async def unknown_route(request):
    return error_response(NotFound(f"Unknown route {request.method} {request.path}"))
