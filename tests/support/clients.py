"""Third-party clients of the /v1 surface (docs/clients/), each installed once per machine under .cache/clients/.

A pip client gets a virtualenv of its own (`.cache/clients/<name>`), an npm client a prefix of its own, so none
of them touches the project's runtime requirements. Each page of docs/clients/ holds the config its test uses:
`documented(page, filename)` reads the fenced block whose info string names the file (```yaml extra.yaml).

`python -m tests.support.clients` installs them all up front (`make clients`).
"""

import fcntl
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENTS_DIR = REPO / ".cache" / "clients"
DOCS = REPO / "docs" / "clients"
# What the pages show as the pooler's address (`make run`'s default), replaced by the test pooler's.
DOCUMENTED_URL = "http://127.0.0.1:4000"

__all__ = ["AIDER", "AI_SDK", "CONTINUE", "LLM", "OPENCODE", "documented", "install"]


@dataclass(frozen=True)
class Client:
    name: str  # its directory under .cache/clients
    registry: str  # "pip" or "npm"
    packages: tuple[str, ...]  # pinned: name==version (pip), name@version (npm)
    command: str = ""  # its launcher, when it has one

    @property
    def prefix(self) -> Path:
        return CLIENTS_DIR / self.name

    @property
    def binary(self) -> Path:
        if self.registry == "pip":
            return self.prefix / "bin" / self.command
        return self.prefix / "node_modules" / ".bin" / self.command


LLM = Client("llm", "pip", ("llm==0.36",), "llm")
AIDER = Client("aider", "pip", ("aider-chat==0.86.2",), "aider")
# ai 7 wants Node 22; 6 is the newest major that runs on the Node 20 of Debian and CI.
AI_SDK = Client("ai-sdk", "npm", ("ai@6.0.325", "@ai-sdk/openai@3.0.141"))
OPENCODE = Client("opencode", "npm", ("opencode-ai@1.18.33",), "opencode")
CONTINUE = Client("continue", "npm", ("@continuedev/cli@1.5.47",), "cn")
ALL = (LLM, AI_SDK, OPENCODE, CONTINUE, AIDER)


def install(client: Client) -> Client:
    """Install `client` unless this exact version already is; parallel runs wait for one another."""
    client.prefix.mkdir(parents=True, exist_ok=True)
    marker = client.prefix / ".installed"
    wanted = " ".join(client.packages)
    with open(client.prefix.parent / f".{client.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and marker.read_text() == wanted):
            # Aider pulls in a few hundred megabytes of wheels: a slow mirror needs the long timeout.
            subprocess.run(_install_args(client), check=True, timeout=1800)
            marker.write_text(wanted)
    return client


def _install_args(client: Client) -> list[str]:
    if client.registry == "npm":
        return [
            "npm",
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(client.prefix),
            *client.packages,
        ]
    python = client.prefix / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(client.prefix)], check=True, timeout=300)
    return [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *client.packages]


def documented(page: str, filename: str, pooler_url: str = DOCUMENTED_URL) -> str:
    """The block of `docs/clients/<page>.md` fenced as ```<lang> <filename>, pointed at `pooler_url`."""
    text = (DOCS / f"{page}.md").read_text()
    found = re.search(rf"^```\w* {re.escape(filename)}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    if found is None:
        raise LookupError(f"docs/clients/{page}.md has no block for {filename}")
    return found.group(1).replace(DOCUMENTED_URL, pooler_url)


if __name__ == "__main__":
    for each in ALL:
        print(f"{each.name}: {' '.join(each.packages)}", flush=True)
        install(each)
