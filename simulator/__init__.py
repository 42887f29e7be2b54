"""A scriptable fake of the ChatGPT Codex backend and its auth server, for tests, the demo and benchmarks.

Run it with `python -m simulator --host 127.0.0.1 --port 4100`; `docs/protocol-notes.md` documents the
control API under `/_sim/`.
"""
