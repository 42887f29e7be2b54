# The front door: `make run` starts the gateway, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 4000
CODEX_VERSION := 0.169.0

.PHONY: run test test-fast lint demo bench bench-peers profile soak codex-cli chromium promtool clients clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The real Codex CLI for end-to-end tests, installed once per checkout.
.cache/codex/node_modules/.bin/codex:
	npm install --silent --no-audit --no-fund --prefix .cache/codex @openai/codex@$(CODEX_VERSION)

codex-cli: .cache/codex/node_modules/.bin/codex

# The clients of docs/clients/ (llm, Aider, the AI SDK, OpenCode, Continue) under .cache/clients; the tests
# install them on first use, this does it ahead of time.
clients: $(VENV)/.installed
	$(PY) -m tests.support.clients

# Debian's Chromium for the admin browser test (skipped when it cannot be installed).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium unavailable: the browser test will be skipped"

# Prometheus's promtool (Debian's `prometheus` package) checks and unit-tests docs/prometheus/alerts.yml.
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || echo "promtool unavailable: the alert rule tests will be skipped"

# A deep listen queue: Twisted's default of 50 drops connections when many agents start turns at once.
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/daphne -e tcp:port=$(PORT):interface=127.0.0.1:backlog=1024 pooler.asgi:application

# Production: one Daphne per core (POOLER_WEB_PROCESSES) on one listening socket, and the worker, under
# supervisord (deploy/supervisord.conf); migrates first. POOLER_BIND=0.0.0.0 to take connections from other hosts.
.PHONY: serve
serve: $(VENV)/.installed
	PORT=$(PORT) $(PY) -m deploy.serve

# On PostgreSQL when DATABASE_URL is set, else on the embedded SQLite.
test: $(VENV)/.installed codex-cli chromium promtool
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not codex_cli and not browser and not clients" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

demo: $(VENV)/.installed codex-cli
	$(PY) -m bench.demo --port $(PORT)

bench: $(VENV)/.installed
	$(PY) -m bench.run
	$(PY) -m bench.peers

# The pooler beside LiteLLM's proxy (installed once into .cache/bench/litellm, never into .venv) and a direct
# connection, on the same turns; BENCH_ARGS for a quick run, e.g. "--targets direct,pooler --seconds 3 --no-cpu".
bench-peers: $(VENV)/.installed
	$(PY) -m bench.peers $(BENCH_ARGS)

profile: $(VENV)/.installed
	$(PY) -m bench.profile

soak: $(VENV)/.installed
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .cache *.sqlite3 test-artifacts
