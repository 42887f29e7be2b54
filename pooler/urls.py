from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from accounts.dashboard import dashboard
from accounts.invite_views import accept_invite
from accounts.two_factor import enrol
from proxy import health
from proxy.errors import error_json
from proxy.metrics import metrics_view

urlpatterns = [
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics_view),
    path("favicon.ico", lambda request: HttpResponse(status=204)),  # browsers ask; nothing to show
    path("admin/invite/", accept_invite, name="accept-invite"),
    path("admin/2fa/", enrol, name="pooler-2fa"),
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="pooler-dashboard"),
    path("admin/", admin.site.urls),
    path("", include("proxy.urls")),
]


def handler404(request, exception=None):
    return error_json(f"Unknown route {request.method} {request.path}", 404, code="not_found")


def handler500(request):
    return error_json("The pooler hit an internal error.", 500, code="internal_error", type="server_error")
