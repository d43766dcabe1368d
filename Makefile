# kafka-celery-bridge: `make demo` and `make test` work on a fresh machine (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install services tools down status lint unit unit-pythons integration test mutation kombu-tests demo bench chaos chaos-sentinel docs docs-build clean

install: $(STAMP)

# Re-install when the dependencies change; pip's cache (~/.cache/pip) makes re-runs fast.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

services:
	bash scripts/services.sh up

down:
	bash scripts/services.sh down

status:
	bash scripts/services.sh status

# docker-compose and promtool, from Debian's packages, for tests/integration/test_compose.py;
# chromium and chromium-driver for the console's browser tests (test_console.py).
tools:
	bash scripts/tools.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

unit: install
	$(BIN)/pytest tests/unit

# The unit tests on the other supported Pythons (pyproject's classifiers; $(PYTHON) is the
# first), each in a venv of its own (.venv-3.12, ...), re-installed when pyproject.toml changes.
OTHER_PYTHONS ?= 3.12 3.13
unit-pythons:
	@set -e; for v in $(OTHER_PYTHONS); do \
	    venv=.venv-$$v; \
	    if [ ! -f $$venv/.installed-stamp ] || [ pyproject.toml -nt $$venv/.installed-stamp ]; then \
	        py=$$(bash scripts/find_python.sh $$v); $$py -m venv $$venv; \
	        $$venv/bin/python -m pip install --quiet --upgrade pip; \
	        $$venv/bin/python -m pip install --quiet -e '.[dev]'; \
	        touch $$venv/.installed-stamp; \
	    fi; \
	    echo "unit tests on Python $$v"; \
	    $$venv/bin/python -m pytest -q -p no:cacheprovider tests/unit; \
	done

integration: install services tools
	$(BIN)/pytest tests/integration

# The documentation site (mkdocs.yml, docs/): `make docs` serves it on http://127.0.0.1:8000
# and rebuilds on change; `make docs-build` builds it into site/ with --strict (a broken link or
# anchor fails), without services. The reference pages are generated from the code
# (scripts/docs_reference.py). Not --quiet: it hides the warnings --strict counts, and the build
# passes with a broken link. NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2; the
# DeprecationWarning is kafka-python's, imported by the reference generator.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 PYTHONWARNINGS=ignore::DeprecationWarning
docs: install
	$(DOCS_ENV) $(BIN)/mkdocs serve

docs-build: install
	$(DOCS_ENV) $(BIN)/mkdocs build --strict

# The whole suite against the real Kafka and Redis that scripts/services.sh starts, and the
# unit part of kombu's Redis transport tests against the workers' transport (~10 s), and the
# unit tests on the other supported Pythons; the documentation site first (no services).
test: install docs-build services tools lint
	$(BIN)/pytest
	bash scripts/kombu_tests.sh unit
	$(MAKE) unit-pythons

# Mutation testing (mutmut 3) of the modules listed in pyproject.toml's [tool.mutmut] against
# tests/unit, from a fresh mutants/ each time (mutmut keeps old verdicts when only the tests
# change), then the score with the equivalent mutants of tests/unit/MUTATION.md set aside.
# One child process by default, niced (~8-15 min on a busy 2-core machine); MUTATION_JOBS=n.
MUTATION_JOBS ?= 1
mutation: install
	rm -rf mutants
	nice -n 10 $(BIN)/mutmut run --max-children $(MUTATION_JOBS)
	$(BIN)/python scripts/mutation_score.py --min 90

# kombu's own Redis transport tests (unit and integration, ~1.5 min, on a throwaway
# redis-server) against bridge.worker.transport; expected failures: scripts/kombu_tests/.
kombu-tests: install
	bash scripts/kombu_tests.sh all

# KEEP=1 leaves the worker, the bridge and Flower running after the summary.
demo: install services
	$(BIN)/python scripts/demo.py $(if $(KEEP),--keep)

# The performance suite (bench/): throughput, scaling, isolation, retry lateness, memory; one
# report in bench/results/latest.json and latest.md (BENCH_PARTS=throughput,memory: only those).
bench: install services
	$(BIN)/python -m bench

# The chaos suite, full profile (every fault 3 times; `make test` runs the reduced profile).
# It starts a Kafka and a Redis of its own (ports 19092, 19093, 16379) and stops them after;
# results in bench/results/chaos.json and chaos.md. CHAOS_SEED=n repeats a run.
chaos: install
	CHAOS_PROFILE=full $(BIN)/pytest -m chaos tests/chaos

# The chaos suite against Redis with Sentinel (a primary, a replica and three Sentinels on
# 16379, 16380, 36379-36381; the handlers' ledger in a Redis of its own on 16381), full profile:
# the primary SIGKILLed (restarted later, back as a replica) and cut off (kill -STOP until the
# replica is promoted, then -CONT), 3 times each. The bridge waits for CHAOS_MIN_REPLICAS
# (default 1) replicas after each enqueue (celery.min_replicas_to_accept); results in
# bench/results/chaos-sentinel.json and .md (chaos-sentinel-min0.* with CHAOS_MIN_REPLICAS=0).
chaos-sentinel: install
	CHAOS_TOPOLOGY=sentinel CHAOS_PROFILE=full $(BIN)/pytest -m chaos tests/chaos

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .mypy_cache .ruff_cache *.egg-info mutants site
