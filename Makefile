# make demo   set up .venv, migrate the SQLite default, seed demo data once, run the jobs in their nightly order,
#             then show every job's health and where alerts would go
# make test   set up .venv, run the whole test suite (SQLite, or PostgreSQL when DATABASE_URL says so)
# make lint   ruff, the layering contract (import-linter) and mypy
# make bench  the recompute, offer-loop, resolve-outcomes and standing/evaluation benchmarks against PostgreSQL,
#             and the framework's all-day paths: skipped runs, health, the overview, a run's fixed cost
#             (see README, Performance; Booking policy and standing)
# make week   a simulated week of the vercel.json schedule with incidents, printing each alert (README, Alerts)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench week clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# DEBUG is off unless set: the demo runs in development mode (no SECRET_KEY or ALLOWED_HOSTS needed).
demo: export DEBUG = true
demo: $(BIN)/.installed
	$(BIN)/python manage.py migrate --verbosity 0
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py resolve_outcomes
	$(BIN)/python manage.py recompute_scores
	$(BIN)/python manage.py evaluate_scores
	$(BIN)/python manage.py offer_loop
	$(BIN)/python manage.py expire_offers
	$(BIN)/python manage.py run_job prune-job-runs
	@$(BIN)/python manage.py job_health || true

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	DEBUG=true $(BIN)/mypy project scoring jobs bench  # its Django plugin imports the settings

clean:
	rm -rf $(VENV) db.sqlite3* .test.sqlite3*

N ?= 100000
OUTCOMES_N ?= 100000
STANDING_N ?= 1000000
bench: $(BIN)/.installed
	$(BIN)/python -m bench.recompute --customers $(N)
	$(BIN)/python -m bench.offers
	$(BIN)/python -m bench.outcomes --appointments $(OUTCOMES_N)
	$(BIN)/python -m bench.standing --customers $(STANDING_N) --appointments $(STANDING_N)
	$(BIN)/python -m bench.paths

week: $(BIN)/.installed
	$(BIN)/python -m bench.week
