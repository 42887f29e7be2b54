"""Liveness and readiness probes for load balancers."""

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import JsonResponse


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
    ok = await sync_to_async(_database_ok)()
    return JsonResponse({"status": "ok" if ok else "database unavailable"}, status=200 if ok else 503)
