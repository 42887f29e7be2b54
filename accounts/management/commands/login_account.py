"""Log a ChatGPT account in, with the Codex CLI's browser (OAuth PKCE) or device-code flow, and add it to a pool."""

import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from accounts.importing import ImportError_, store_account
from accounts.oauth import (
    DEVICE_CODE_LIFETIME,
    LoginExpired,
    LoginFailed,
    PkceLogin,
    poll_device_code,
    request_device_code,
)

from ._base import BaseCommand, CommandError, get_pool

_DONE_PAGE = b"<html><body><h1>Codex Pooler</h1><p>Login received. You can close this tab.</p></body></html>"


def _callback_server(port: int, redirects: queue.Queue) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if not self.path.startswith("/auth/callback"):
                self.send_error(404)
                return
            redirects.put(f"http://localhost:{port}{self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(_DONE_PAGE)

        def log_message(self, *args):  # keep codes out of the terminal
            pass

    return HTTPServer(("127.0.0.1", port), Handler)


def _read_pasted(redirects: queue.Queue) -> None:
    for line in sys.stdin:
        if "code=" in line or "error=" in line:
            redirects.put(line.strip())
            return


class Command(BaseCommand):
    help = (
        "Log in a ChatGPT account and add it to a pool: in a browser (OAuth PKCE, like `codex login`), "
        "or with --device by entering a code at the auth server's page (like `codex login --device-auth`)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--pool", required=True)
        parser.add_argument("--label", default="")
        parser.add_argument("--base-url", default="", help="upstream base URL (default: the real backend)")
        parser.add_argument(
            "--device",
            action="store_true",
            help="sign in with a one-time code entered on any device (for a machine without a browser)",
        )
        parser.add_argument("--callback-port", type=int, default=1455, help="local port of the redirect")
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help=f"seconds to wait for the login (default 600; {DEVICE_CODE_LIFETIME} with --device, the code's life)",
        )

    def handle(self, *args, pool, label, base_url, device, callback_port, timeout, **options):
        pool = get_pool(pool)
        try:
            if device:
                tokens = self._device_tokens(timeout or DEVICE_CODE_LIFETIME)
            else:
                tokens = self._browser_tokens(callback_port, timeout or 600)
            account = store_account(tokens, pool, label=label, base_url=base_url)
        except (LoginFailed, ImportError_) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"logged in {account.label} ({account.email or 'no email'}; account {account.chatgpt_account_id}, "
            f"plan {account.plan_type or '?'}) into pool {pool.name}"
        )

    def _browser_tokens(self, callback_port: int, timeout: float) -> dict:
        login = PkceLogin(redirect_uri=f"http://localhost:{callback_port}/auth/callback")
        redirects: queue.Queue = queue.Queue()
        try:
            server = _callback_server(callback_port, redirects)
        except OSError as exc:
            # Often a Codex CLI login waiting on the same port: the pasted redirect still works.
            server = None
            self.stderr.write(f"cannot listen on localhost:{callback_port} ({exc.strerror}): paste the redirect URL")
        if server is not None:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Thread(target=_read_pasted, args=(redirects,), daemon=True).start()
        self.stdout.write("Open this URL in a browser and log in to ChatGPT:")
        self.stdout.write(login.authorize_url())
        self.stdout.write("If the browser cannot reach this machine, paste the URL it was redirected to here.")
        self.stdout.flush()
        try:
            redirect = redirects.get(timeout=timeout)
        except queue.Empty:
            raise CommandError(f"no login within {timeout:.0f} seconds; run login_account again") from None
        finally:
            if server is not None:
                server.shutdown()
        return login.exchange(login.code_from_redirect(redirect))

    def _device_tokens(self, timeout: float) -> dict:
        code = request_device_code()
        self.stdout.write("Open this page in any browser, sign in to ChatGPT and enter the code:")
        self.stdout.write(f"  {code.verification_url}")
        self.stdout.write(f"  {code.user_code}")
        self.stdout.write(f"It expires in {DEVICE_CODE_LIFETIME // 60} minutes. Never share it: it signs in as you.")
        self.stdout.write("Waiting for the approval...")
        self.stdout.flush()
        deadline = time.monotonic() + timeout
        while True:
            poll = poll_device_code(code)
            if poll.tokens is not None:
                return poll.tokens
            if poll.status == "slow_down":
                self.stderr.write(f"the auth server asked to poll less often: every {code.interval} s now")
            if time.monotonic() + code.interval > deadline:
                raise LoginExpired(
                    f"the code {code.user_code} was not approved within {timeout:.0f} seconds; "
                    "run login_account --device again"
                )
            time.sleep(code.interval)
