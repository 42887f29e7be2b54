"""Daphne's websocket connection, sending the headers an application gives with `websocket.accept`.

ASGI lets an application accept a websocket with response headers (`headers` of `websocket.accept`, spec 2.1);
Daphne 4.2 drops them. The pooler's handshake carries the pool's quota headers as the backend's carries an
account's (proxy/pool_quota.py). Autobahn, under Daphne, takes them as the `(subprotocol, headers)` result of
its handshake; Daphne builds its connections from `WebSocketFactory.protocol`, Autobahn's documented attribute.
`tests/test_pool_quota.py` fails when an upgrade stops sending them.
"""

from daphne import ws_protocol


class PoolerWebSocketProtocol(ws_protocol.WebSocketProtocol):
    accept_headers: dict[str, str] | None = None

    def handle_reply(self, message):
        if message.get("type") == "websocket.accept" and message.get("headers"):
            self.accept_headers = {
                bytes(name).decode("latin1"): bytes(value).decode("latin1") for name, value in message["headers"]
            }
        super().handle_reply(message)

    def serverAccept(self, subprotocol=None):
        if self.accept_headers:
            # Daphne's own serverAccept, with the headers beside the subprotocol.
            self.handshake_deferred.callback((subprotocol, self.accept_headers))
            del self.handshake_deferred
            return
        super().serverAccept(subprotocol)


def install() -> None:
    ws_protocol.WebSocketFactory.protocol = PoolerWebSocketProtocol
