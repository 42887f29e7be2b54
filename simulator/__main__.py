"""`python -m simulator --host 127.0.0.1 --port 4100`: one uvicorn process, all state in memory."""

import argparse

import uvicorn

from .app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4100)
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (info shows every request)")
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        ws="websockets-sansio",
        ws_max_size=64 * 1024 * 1024,
        ws_per_message_deflate=True,
        timeout_keep_alive=75,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
