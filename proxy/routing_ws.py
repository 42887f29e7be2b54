"""Websocket routes (Channels)."""

from django.urls import path

from .consumers import ResponsesConsumer

websocket_urlpatterns = [path("backend-api/codex/responses", ResponsesConsumer.as_asgi())]
