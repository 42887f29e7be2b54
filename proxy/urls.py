from django.urls import path, re_path

from . import views

urlpatterns = [
    path("backend-api/codex/responses", views.responses),
    path("backend-api/codex/responses/compact", views.compact),
    path("backend-api/codex/models", views.models),
    path("backend-api/codex/realtime/calls", views.realtime_calls),
    # Anything else under the runtime prefixes is a clear JSON 404: the pooler is not a wildcard proxy.
    re_path(r"^(?:backend-api|v1)/", views.unknown_route),
]
