# The two commands of the README. Everything they need is installed by scripts/bootstrap.sh.
PY := .venv/bin/python

.PHONY: demo test setup lint

setup:
	@scripts/bootstrap.sh

## Set everything up on the embedded database and broker, import and process the demo images,
## then serve the site and a worker on http://127.0.0.1:8000 (Ctrl-C stops all of it).
demo: setup
	$(PY) manage.py demo $(DEMO_ARGS)

## The test suite against real PostgreSQL + pgvector (embedded unless DATABASE_URL is set) and real Redis.
test: setup
	scripts/test.sh $(TEST_ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .
