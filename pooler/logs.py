"""One JSON line per request (python-json-logger): ids, pool, key prefix, account, status, timings."""

from pythonjsonlogger.json import JsonFormatter


class RequestLineFormatter(JsonFormatter):
    def __init__(self, **kwargs):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"asctime": "time"}, **kwargs)
