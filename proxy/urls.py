from django.urls import path, re_path

from . import v1_views, views

urlpatterns = [
    path("backend-api/codex/responses", views.responses),
    path("backend-api/codex/responses/compact", views.compact),
    path("backend-api/codex/models", views.models),
    path("backend-api/codex/realtime/calls", views.realtime_calls),
    path("backend-api/wham/usage", views.wham_usage),
    path("v1/models", v1_views.models),
    path("v1/usage", v1_views.usage),
    path("v1/responses", v1_views.responses),
    path("v1/responses/compact", v1_views.responses_compact),
    path("v1/chat/completions", v1_views.chat_completions),
    # Anything else under the runtime prefixes is a clear JSON 404: the pooler is not a wildcard proxy.
    re_path(r"^(?:backend-api|v1)/", views.unknown_route),
]
