# Two entry points: `make run` (set up + main job) and `make test` (set up + tests).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SCENARIO ?= scenarios/drift_sentiment.yaml

.PHONY: run test report clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch/torchvision are pinned in pyproject.toml; pip resolves them from local disk where present.
$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.stamp-run

run: $(VENV)/.stamp-run
	$(BIN)/clsim run $(SCENARIO)

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

# The README's reference report: every strategy over 3 seeds (about an hour on 2 CPU cores), then
# its comparison (tables with intervals, plots) into results/drift_sentiment/, which is committed.
report: $(VENV)/.stamp-run
	$(BIN)/clsim run scenarios/drift_sentiment_report.yaml --run-id reference
	$(BIN)/clsim compare results/drift_sentiment_report/reference --output results/drift_sentiment

clean:
	rm -rf $(VENV)
