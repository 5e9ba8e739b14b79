# DermaScan: `make run` serves the embedded system on http://127.0.0.1:8080, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
#: pytest-xdist processes for make test: most tests wait on processes, the broker and the network, so
#: three share 2 cores well (8 min 57 s of tests, 176 % CPU; two: 9 min 58 s, 156 %). Each module runs
#: whole in one of them, in the order tests/conftest.py gives.
TEST_JOBS ?= 3
PYTEST := $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

.PHONY: run test test-fast lint system-deps rabbitmq loadtest reliability-doc clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(PY) -m embedded

system-deps:
	scripts/system-deps.sh

rabbitmq: system-deps
	scripts/ensure-rabbitmq.sh

test: $(STAMP) rabbitmq  ## every test; then the tree must be as the tests found it
	@mkdir -p var && (git status --porcelain 2>/dev/null || true) > var/tree-before-tests
	$(PYTEST)
	@(git status --porcelain 2>/dev/null || true) | diff -u var/tree-before-tests - \
		|| { echo "make test changed the tree (above): tests must not write tracked files" >&2; exit 1; }

test-fast: $(STAMP)  ## the tests not marked slow; those that need RabbitMQ skip when none answers
	DERMASCAN_TEST_BROKER_OPTIONAL=1 $(PYTEST) -m "not slow"

lint: $(STAMP)  ## ruff and mypy --strict over the whole tree, configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

reliability-doc:  ## the last test run's fault-test figures (var/reliability.md) into the tracked docs/reliability.md
	test -f var/reliability.md || { echo "run make test first: no var/reliability.md" >&2; exit 1; }
	cp var/reliability.md docs/reliability.md

loadtest: $(STAMP)  ## Locust web UI on :8089 against a running DermaScan (DERMASCAN_URL)
	$(VENV)/bin/locust -f locustfile.py --host $${DERMASCAN_URL:-http://127.0.0.1:8080}

clean:
	rm -rf $(VENV) var .pytest_cache
