# Two commands on a fresh machine: `make run` and `make test`. Both create .venv from uv.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never

.PHONY: install run test test-fast lint format tools openapi histories bench bench-scale bench-overload bench-admission chaos reliability-report clean

# Installing writes to stderr only, so the first line `make run` prints is the stack's JSON.
$(BIN)/uv:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version.split()[0]'
	@echo "creating $(VENV)" >&2
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet uv==$(UV_VERSION) >&2

$(VENV)/.synced: uv.lock pyproject.toml | $(BIN)/uv
	@$(BIN)/uv sync --frozen --extra dev --inexact --python $(BIN)/python >&2
	@touch $@

install: $(VENV)/.synced

run: install
	@$(BIN)/python -m scripts.run_stack

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Debian's packages, installed when missing: wrk, the load generator of the benchmarks and their
# smoke test, and nginx, the real TLS endpoint (generated CA, mTLS, API key) in front of the dev
# server in tests/test_tls.py, which runs /usr/sbin/nginx itself.
tools:
	@missing=; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -z "$$missing" ] || { \
	  echo "installing$$missing (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; }

# The suite on 3 processes (pytest-xdist: each with its own dev server and shared worker, a file
# per process, the longest files first): about 10 minutes on 2 cores with one busy, against about
# 20 in one process (TEST_PROCESSES=0). More processes starve that machine: the API then refuses
# some starts honestly (503, past its RPC budget), which the tests and the chaos smoke count as
# failures.
TEST_PROCESSES ?= 3
test: lint tools
	$(BIN)/pytest -q -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

# Under a minute: the pure parts (tests/unit, the chaos checker, the docs) and the workflow tests
# that need one dev server and in-process workers only (limits, plug-ins, the queue's API, replay,
# take-over). The end-to-end tests that kill no process: make test PYTEST_ARGS='-m "not reliability"'.
FAST_TESTS := tests/unit tests/test_chaos_checker.py tests/test_docs_in_step.py tests/test_limits.py \
	tests/test_plugins.py tests/test_queue_api.py tests/test_replay.py tests/test_takeover.py \
	tests/test_chaos_admission.py
test-fast: install
	$(BIN)/pytest -q $(FAST_TESTS) $(PYTEST_ARGS)

openapi: install
	$(BIN)/python -m scripts.export_openapi

# Record the workflow histories tests/test_replay.py replays (only for a change meant to be
# incompatible; see docs/operations.md, "Changing the workflows safely").
histories: install
	ADD=$(ADD) $(BIN)/python -m scripts.record_histories

reliability-report: install
	$(BIN)/pytest -q -m reliability
	$(BIN)/python -m scripts.reliability_report

bench: install tools
	$(BIN)/python -m bench $(BENCH_ARGS)

# Many scopes at once against raw Temporal (10, 100, 1,000 by default): a table in
# docs/PERFORMANCE.md and the plot docs/scale.png. More: SCALE_ARGS="--points 10,100,1000,5000".
bench-scale: install
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

# 2,000 users at once against one deployment with its default settings, 5 readers beside them:
# every start 202 or a documented 503, every accepted run DONE. OVERLOAD_ARGS="--users 500".
bench-overload: install
	$(BIN)/python -m bench.overload $(OVERLOAD_ARGS)

# Issue 21: 10,000 runs queued over 1,000 users (one slot each, held), then enqueue vs reject
# answers, status reads of queued runs vs the in-memory seed's, and the coordinators' bounds.
# ADMISSION_ARGS="--scopes 100 --fill-one".
bench-admission: install
	$(BIN)/python -m bench.admission $(ADMISSION_ARGS)

# One seeded randomized fault run against a real stack (2 APIs, 2 workers, a real server) and its
# verdict: `make chaos MINUTES=30 SEED=7 CHAOS_ARGS="--slots 2 --scope user_id"`.
MINUTES ?= 5
SEED ?= $(shell date +%s)
chaos: install
	$(BIN)/python -m chaos --minutes $(MINUTES) --seed $(SEED) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
