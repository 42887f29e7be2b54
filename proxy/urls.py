from django.urls import path, re_path

from . import views

urlpatterns = [
    # Anything else under the runtime prefixes is a clear JSON 404: the pooler is not a wildcard proxy.
    re_path(r"^(?:backend-api|v1)/", views.unknown_route),
]
