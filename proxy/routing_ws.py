"""Websocket routes (Channels)."""

websocket_urlpatterns = []
