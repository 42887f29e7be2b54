"""The operators' Grafana dashboard and Prometheus alerts (under docs/) read series the pooler really exports."""

import json
import re
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool

DOCS = Path(__file__).resolve().parents[1] / "docs"
DASHBOARD = DOCS / "grafana" / "codex-pooler-dashboard.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"
ALERT_TESTS = DOCS / "prometheus" / "alerts_test.yml"
OPERATIONS = DOCS / "operations.md"

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# The pooler's own series and the client library's standard ones; `up` is made by Prometheus, not exported.
METRIC = re.compile(r"\b(?:pooler|process|python)_[a-z0-9_]+")
SELECTOR = re.compile(r"\b((?:pooler|process|python)_[a-z0-9_]+)\{([^}]*)\}")
# What a family of each type exposes: a counter `x` is read as `x_total`, a histogram as `x_bucket`...
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool is not on PATH (Debian's `prometheus` package ships it)"
)


class _YamlSubset:
    """The YAML the rules file is written in: block mappings and sequences, plain or single-quoted one-line
    scalars and `>-` folded text. PyYAML is not a dependency; anything outside this raises, so the file stays
    within it (promtool, when present, reads it with a full parser)."""

    _KEY = re.compile(r"([A-Za-z_][\w-]*):(?: (.*))?$")

    def __init__(self, text: str):
        self.lines = [(len(raw) - len(raw.lstrip(" ")), raw.strip()) for raw in text.splitlines()]
        self.pos = 0

    def load(self):
        value = self._node()
        if self._next() is not None:
            raise ValueError(f"line {self.pos + 1}: unexpected indentation")
        return value

    def _next(self) -> tuple[int, str] | None:
        while self.pos < len(self.lines) and (not self.lines[self.pos][1] or self.lines[self.pos][1][0] == "#"):
            self.pos += 1
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def _node(self):
        indent, text = self._next()
        return self._sequence(indent) if text.startswith("- ") else self._mapping(indent)

    def _sequence(self, indent: int) -> list:
        items = []
        while (line := self._next()) and line[0] == indent and line[1].startswith("- "):
            rest = line[1][2:].lstrip()
            if self._KEY.match(rest):
                # "- key: value" opens a mapping whose next keys line up under this first one.
                self.lines[self.pos] = (indent + len(line[1]) - len(rest), rest)
                items.append(self._mapping(self.lines[self.pos][0]))
            else:
                self.pos += 1
                items.append(self._scalar(rest))
        return items

    def _mapping(self, indent: int) -> dict:
        mapping = {}
        while (line := self._next()) and line[0] == indent:
            match = self._KEY.match(line[1])
            if not match or match.group(1) in mapping:
                raise ValueError(f"line {self.pos + 1}: not a new key: {line[1]!r}")
            key, rest = match.group(1), (match.group(2) or "").strip()
            self.pos += 1
            if rest == ">-":
                mapping[key] = self._folded(indent)
            elif rest:
                mapping[key] = self._scalar(rest)
            elif (child := self._next()) and child[0] > indent:
                mapping[key] = self._node()
            else:
                raise ValueError(f"line {self.pos}: {key} has no value")
        if line and line[0] > indent:
            raise ValueError(f"line {self.pos + 1}: unexpected indentation")
        return mapping

    def _folded(self, indent: int) -> str:
        start = self.pos
        while self.pos < len(self.lines) and self.lines[self.pos][1] and self.lines[self.pos][0] > indent:
            self.pos += 1
        block = self.lines[start : self.pos]
        if not block or len({depth for depth, _ in block}) != 1:
            raise ValueError(f"line {start + 1}: a folded block needs lines of one indentation")
        return " ".join(text for _, text in block)

    def _scalar(self, text: str) -> str:
        if text[0] == "'" and len(text) > 1 and text[-1] == "'" and "'" not in text[1:-1].replace("''", ""):
            return text[1:-1].replace("''", "'")
        if text[0] in "'\"[]{}&*!|>%@`#?:-" or " #" in text or ": " in text:
            raise ValueError(f"line {self.pos}: outside the YAML this file uses: {text!r}")
        return text


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    """Every panel, the ones inside collapsed rows included."""
    return [p for top in board["panels"] for p in [top, *top.get("panels", [])]]


def dashboard_exprs(board: dict) -> list[str]:
    targets = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    return targets + [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]


def alert_rules() -> list[dict]:
    return [rule for group in _YamlSubset(ALERTS.read_text()).load()["groups"] for rule in group["rules"]]


def operations_alert_column() -> list[str]:
    """The "alert" cell of each row of the table in "Alerts and what they mean"."""
    section = OPERATIONS.read_text().split("## Alerts and what they mean", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row.strip("|").split("|")[1] for row in rows[1:]]  # below the header and its |---| line


def operations_metric_column() -> list[str]:
    """The "metric" cell of each row of the table in "Metrics"."""
    section = OPERATIONS.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row.strip("|").split("|")[0].strip().strip("`") for row in rows[1:]]


@pytest.mark.django_db(transaction=True)
def test_every_series_they_read_is_in_the_pooler_metrics(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    turn = httpx.post(f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30)
    assert turn.status_code == 200

    families = list(text_string_to_metric_families(httpx.get(f"{pooler.url}/metrics").text))
    # A labelled counter with no series yet (no MCP call, no refresh) is exported as a family without samples.
    exported = {f.name + suffix for f in families for suffix in SERIES_SUFFIXES.get(f.type, ("",))}
    labels = {}
    for family in families:
        for sample in family.samples:
            exported.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)

    exprs = dashboard_exprs(dashboard()) + [rule["expr"] for rule in alert_rules()]
    assert {name for expr in exprs for name in METRIC.findall(expr)} - exported == set()
    for expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
            if name in labels:
                assert used <= labels[name] | TARGET_LABELS, (name, used)
    # Each of the pooler's own families is a row of the operations guide's metrics table, as it is read (a counter
    # `x` as `x_total`), and each row is a family. The parser reads a family's `x_created` samples as one more.
    names = {f.name for f in families}
    ours = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in families
        if f.name.startswith("pooler_") and f.name.removesuffix("_created") not in names - {f.name}
    }
    documented = operations_metric_column()
    assert len(documented) == len(set(documented)) and set(documented) == ours
    # The pool choice of the dashboard lists the pool that answered.
    requests = next(f for f in families if f.name == "pooler_requests")
    assert pool.name in {s.labels["pool"] for s in requests.samples}


def test_the_dashboard_imports_with_a_prometheus_source_and_a_pool_choice():
    board = dashboard()
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    every = panels(board)
    assert len({p["id"] for p in every}) == len(every)
    for panel in every:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE and panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]
            assert set(re.findall(r"\$(\w+)", target["expr"])) <= {"pool", "__rate_interval"}, target["expr"]
    for a, b in combinations(board["panels"], 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
        assert apart or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"], (a["title"], b["title"])
    pool = next(v for v in board["templating"]["list"] if v["name"] == "pool")
    assert pool["datasource"] == DATASOURCE
    assert pool["definition"] == pool["query"]["query"] == "label_values(pooler_requests_total, pool)"


def test_one_rule_per_row_of_the_operations_table():
    rules = alert_rules()
    assert [group["name"] for group in _YamlSubset(ALERTS.read_text()).load()["groups"]] == ["codex-pooler"]
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    named = [re.findall(r"CodexPooler[A-Za-z]+", cell) for cell in operations_alert_column()]
    assert named == [[rule["alert"]] for rule in rules]
    # Each alert is seen firing in promtool's unit tests.
    assert {rule["alert"] for rule in rules} <= set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))


@needs_promtool
def test_promtool_checks_the_rules_and_sees_each_one_fire():
    for command in (["check", "rules", ALERTS], ["test", "rules", ALERT_TESTS]):
        result = subprocess.run([promtool, *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    # Each query as a recording rule, with Grafana's variables filled in as Grafana does ("All" is `.*`).
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "1m").replace("$pool", ".*"),
        }
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
