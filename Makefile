# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The test suite runs against PostgreSQL and Redis for real.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint bench bench-ingest bench-dispatch bench-process bench-notify bench-admin clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

## run: the portal on the embedded defaults (SQLite, filesystem broker): web, dispatcher, worker, beat
run: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python manage.py load_demo --if-empty
	WEB_CONCURRENCY=$${WEB_CONCURRENCY:-2} $(BIN)/honcho start

## test: ruff, then the whole suite against PostgreSQL and Redis
test: $(BIN)/.installed lint
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(BIN)/pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: every benchmark, one table (under 10 minutes on 2 cores)
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_all.py

bench-ingest: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_ingest.py

bench-dispatch: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_dispatch.py

bench-process: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_process.py

bench-notify: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_notify.py

bench-admin: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_admin.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
