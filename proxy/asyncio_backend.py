"""httpcore's network backend on plain asyncio streams, for the upstream client.

httpcore's default backend goes through anyio, which on every read of a relayed stream enters a cancel
scope and pauses and resumes the socket's reader (an epoll change each): about a third of the pooler's CPU
at 50 open streams. This backend does the same job with asyncio's own streams, through httpcore's
documented extension point (`network_backend`).

A read's timeout is one timer per connection, moved on lazily, rather than a timer made and cancelled for every
read (asyncio.timeout): a relayed stream reads once per event, and most reads find their data waiting.
"""

import asyncio
import socket
import ssl
from collections.abc import Iterable

import httpcore
from httpcore._utils import is_socket_readable

from . import metrics

# The stream buffer may hold this much before asyncio stops reading the socket: one SSE event is far less.
_READ_LIMIT = 256 * 1024
_CLOCK_SLACK = 0.001  # a timer may run a little before its time


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader, self._writer = reader, writer
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None  # of the read under way, if it has one
        self._watchdog: asyncio.TimerHandle | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if timeout is not None:
            self._deadline = self._loop.time() + timeout
            if self._watchdog is None:
                self._watchdog = self._loop.call_at(self._deadline, self._check_deadline)
        try:
            return await self._reader.read(max_bytes)
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc
        finally:
            self._deadline = None

    def _check_deadline(self) -> None:
        """The timer: a read still waiting at its deadline fails (the connection is then dropped); one that has
        a later deadline is checked again then; with no read under way the timer stops, until the next read."""
        self._watchdog = None
        if self._deadline is None:
            return
        if self._loop.time() + _CLOCK_SLACK >= self._deadline:
            # Wakes the waiting read with the error (StreamReader's own way to fail a read).
            self._reader.set_exception(httpcore.ReadTimeout("upstream read timed out"))
        else:
            self._watchdog = self._loop.call_at(self._deadline, self._check_deadline)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("upstream write timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass  # closing a connection the peer already broke

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> "AsyncioStream":
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str):
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # An idle kept-alive connection that is readable was closed by the server: not reused.
            sock = self._writer.get_extra_info("socket")
            return sock is not None and is_socket_readable(sock)
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, limit=_READ_LIMIT
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        metrics.UPSTREAM_CONNECTIONS.inc()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable | None = None
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=_READ_LIMIT)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {path} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
