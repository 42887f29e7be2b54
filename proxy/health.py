"""Liveness and readiness probes for load balancers."""

from django.db import connection
from django.http import JsonResponse

from .dbthread import on_db_thread


async def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any database failure means not ready
        return False


async def readyz(request):
    ok = await on_db_thread(_database_ok)()
    return JsonResponse({"status": "ok" if ok else "database unavailable"}, status=200 if ok else 503)
