"""The upstream client's asyncio network backend over real TLS sockets (the Codex backend is HTTPS)."""

import datetime
import http.server
import ssl
import threading
import time

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.asyncio_backend import AsyncioBackend


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a second request can reuse the connection

    def do_GET(self):
        if self.path.startswith("/trickle"):
            return self._trickle(pause=self.path.endswith("pause"))
        if self.path == "/slow":
            time.sleep(1)
        body = b"".join(b"data: %d\n\n" % i for i in range(50))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, pause: bool):
        """An event every 0.1 s for 0.8 s (then, with `pause`, 1 s of silence before the last)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(9):
            if pause and i == 8:
                time.sleep(1)
            event = b"data: %d\n\n" % i
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            time.sleep(0.1)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_server(certificate):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()


def pool(certificate) -> httpcore.AsyncConnectionPool:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    return httpcore.AsyncConnectionPool(ssl_context=context, network_backend=AsyncioBackend())


async def test_requests_over_tls_reuse_one_connection(certificate, tls_server):
    async with pool(certificate) as connections:
        for _ in range(2):
            response = await connections.request("GET", tls_server + "/")
            assert response.status == 200 and response.content.count(b"data: ") == 50
        assert len(connections.connections) == 1  # kept alive and reused


async def test_a_silent_server_is_a_read_timeout(certificate, tls_server):
    async with pool(certificate) as connections:
        with pytest.raises(httpcore.ReadTimeout):
            await connections.request("GET", tls_server + "/slow", extensions={"timeout": {"read": 0.2}})


async def test_a_read_timeout_is_per_read_not_per_stream(certificate, tls_server):
    """A stream that keeps sending goes on past the read timeout (one timer per connection, moved on by each
    read); a pause longer than the timeout, in the middle of the stream, fails the read waiting through it."""
    timeout = {"timeout": {"read": 0.3}}
    async with pool(certificate) as connections:
        response = await connections.request("GET", tls_server + "/trickle", extensions=timeout)
        assert response.content.count(b"data: ") == 9
        async with connections.stream("GET", tls_server + "/trickle-pause", extensions=timeout) as response:
            seen = b""
            with pytest.raises(httpcore.ReadTimeout):
                async for chunk in response.aiter_stream():
                    seen += chunk
            assert seen.count(b"data: ") == 8  # what came before the pause was read


async def test_an_untrusted_certificate_is_refused(tls_server):
    async with httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as connections:
        with pytest.raises(httpcore.ConnectError):
            await connections.request("GET", tls_server + "/")


async def test_a_closed_port_is_a_connect_error():
    async with httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as connections:
        with pytest.raises(httpcore.ConnectError):
            await connections.request("GET", "http://127.0.0.1:9/")


class _CookieHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = (self.headers.get("cookie") or "-").encode()
        self.send_response(200)
        self.send_header("set-cookie", "__cf_bm=account-a; Path=/")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


async def test_the_upstream_client_keeps_no_cookie_between_accounts():
    """A cookie the backend sets on one account's answer never goes with the next turn (another account's)."""
    from proxy import upstream

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CookieHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # One made on this test's loop (an earlier test's is closed).
    earlier, upstream._client, upstream._pools = (upstream._client, upstream._pools), None, None
    client = upstream.client()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        first = await client.get(url, headers={"chatgpt-account-id": "a"})
        assert first.headers["set-cookie"].startswith("__cf_bm=")
        second = await client.get(url, headers={"chatgpt-account-id": "a"})
        assert second.text == "-" and len(client.cookies) == 0
    finally:
        await client.aclose()
        upstream._client, upstream._pools = earlier
        server.shutdown()
