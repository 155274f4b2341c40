# Labinov — the two commands a newcomer needs: `make run` and `make test`.
# Both create .venv/ and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast test-browser lint format bench translations clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the whole suite on the embedded defaults (SQLite + embedded Redis under ./var/)
run: $(STAMP)
	$(BIN)/labinov run

## test: lint, then every test — unit, integration (real PostgreSQL + RabbitMQ), end to end (real processes)
test: lint
	$(BIN)/python -m pytest -rs $(PYTEST_ARGS)

## test-fast: everything but the end-to-end tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -rs -m "not e2e" $(PYTEST_ARGS)

## test-browser: the browser tests only (Playwright driving Debian's Chromium, /usr/bin/chromium)
test-browser: $(STAMP)
	$(BIN)/python -m pytest -rs -m browser tests/browser $(PYTEST_ARGS)

## translations: extract the page strings, update the Indonesian catalogue, compile it (the .mo is committed)
translations: $(STAMP)
	$(BIN)/pybabel extract -F shared/translations/babel.cfg -k _l -k lazy_gettext -k N_ --no-location \
		--sort-output --project labinov -o shared/translations/messages.pot .
	$(BIN)/pybabel update -i shared/translations/messages.pot -d shared/translations -l id --no-fuzzy-matching
	$(BIN)/pybabel compile -d shared/translations --statistics

## lint: ruff; the import contracts of pyproject.toml (layers, no service imports another, no Flask in
## workers); mypy on shared/
lint: $(STAMP)
	$(BIN)/ruff check shared services tests
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format shared services tests
	$(BIN)/ruff check --fix shared services tests

## bench: measured figures, written to bench-results.txt
bench: $(STAMP)
	$(BIN)/python -m tests.bench.run --output bench-results.txt

clean:
	rm -rf $(VENV) var .pytest_cache
