# embsym: `make reproduce` runs every task family on the offline profile and renders outputs/report.html;
# `make test` runs the test suite. Both create the environment in .venv first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= offline
JOBS ?= 2

.PHONY: env reproduce test lint format constraints clean-outputs

env:
	@bash tools/install_env.sh

reproduce: env
	$(VENV)/bin/embsym run all --profile $(PROFILE) --jobs $(JOBS)
	$(VENV)/bin/embsym collate --profile $(PROFILE)

test: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

constraints:
	$(PY) -m pip freeze --exclude-editable | grep -v '^learn2learn\|^recbole' > constraints.txt

clean-outputs:
	find outputs -mindepth 1 ! -name README.md -exec rm -rf {} +
