"""Who may use /mcp: a live MCP token whose user is still active."""

from accounts.models import McpToken


def live_token(raw: str) -> McpToken | None:
    # Deactivating an operator's Django user shuts them out at once, without revoking each token by hand.
    return McpToken.lookup(raw, McpToken.objects.filter(user__is_active=True).select_related("user"))
