# Two entry points: `make run` (set up + main job) and `make test` (set up + tests).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SCENARIO ?= scenarios/drift_sentiment.yaml

.PHONY: run test report goal-report cars-report claritin-report probe-report online-report anchors-report clean

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

# The README's reference report: every strategy over 3 seeds, then its comparison (tables with
# intervals, plots) into results/drift_sentiment/, which is committed. Seed 0 of drift_sentiment's
# strategies is `make run`'s job itself; the report scenario adds seeds 1 and 2 of every strategy
# and seed 0 of the two it alone has (naive_2x, lwf); --pool-seeds compares each strategy over its
# three seeds. It runs drift_sentiment.yaml again (7.5 minutes on 2 CPU cores with native bf16), then
# the rest (about 23). It replaces the committed run folders (`git restore results/` brings them back).
report: $(VENV)/.stamp-run
	rm -rf results/drift_sentiment/reference results/drift_sentiment_report/reference results/drift_sentiment_report/reference_seed0
	$(BIN)/clsim run scenarios/drift_sentiment.yaml --run-id reference
	$(BIN)/clsim run scenarios/drift_sentiment_report.yaml --seeds 1,2 --run-id reference
	$(BIN)/clsim run scenarios/drift_sentiment_report.yaml --seeds 0 --strategies naive_2x,lwf --run-id reference_seed0
	$(BIN)/clsim compare --pool-seeds results/drift_sentiment/reference results/drift_sentiment_report/reference \
		results/drift_sentiment_report/reference_seed0 --output results/drift_sentiment

# Does the recipe meet its goal? naive over drift_sentiment's stream and recipe with 1,000 test
# tweets per topic and fresh seeds 5-9 (scenarios/drift_sentiment_goal.yaml); comparison into
# results/drift_sentiment_goal/.
goal-report: $(VENV)/.stamp-run
	rm -rf results/drift_sentiment_goal/evidence
	$(BIN)/clsim run scenarios/drift_sentiment_goal.yaml --run-id evidence
	$(BIN)/clsim compare results/drift_sentiment_goal/evidence --output results/drift_sentiment_goal

# Is cars (87.6 % neutral) learned beyond its majority rate? drift_sentiment's first two topics with
# 1,000 test tweets each over 5 seeds (the continual strategies with replay and EWC at the values
# the study was first made with, then `independent`, then replay and EWC at the shipped values, then
# calibrated variants), cars alone with 2,000 training tweets over 3 seeds, and the two topics with
# 1,000 training tweets each; comparisons into results/drift_sentiment_cars*/ (about two hours on
# 2 CPU cores).
CARS_CONTINUAL := naive,naive_2x,replay,ewc,lwf,periodic_refinetune,fedavg
cars-report: $(VENV)/.stamp-run
	rm -rf results/drift_sentiment_cars/evidence results/drift_sentiment_cars/independent \
		results/drift_sentiment_cars/retuned results/drift_sentiment_cars/calibrated \
		results/drift_sentiment_cars_alone/evidence results/drift_sentiment_cars_more/evidence
	$(BIN)/clsim run scenarios/drift_sentiment_cars.yaml --strategies $(CARS_CONTINUAL) --run-id evidence
	$(BIN)/clsim run scenarios/drift_sentiment_cars.yaml --strategies independent --run-id independent
	$(BIN)/clsim run scenarios/drift_sentiment_cars.yaml --strategies replay_300,ewc_1e5 --run-id retuned
	$(BIN)/clsim run scenarios/drift_sentiment_cars.yaml --run-id calibrated --strategies \
		naive_bias,naive_bcts,lwf_bias,lwf_bcts,replay_bias,replay_bcts,independent_bcts
	$(BIN)/clsim run scenarios/drift_sentiment_cars_alone.yaml --run-id evidence
	$(BIN)/clsim run scenarios/drift_sentiment_cars_more.yaml --run-id evidence
	$(BIN)/clsim compare results/drift_sentiment_cars/evidence results/drift_sentiment_cars/independent \
		results/drift_sentiment_cars/retuned results/drift_sentiment_cars/calibrated --output results/drift_sentiment_cars
	$(BIN)/clsim compare results/drift_sentiment_cars_alone/evidence --output results/drift_sentiment_cars_alone
	$(BIN)/clsim compare results/drift_sentiment_cars_more/evidence --output results/drift_sentiment_cars_more

# Is claritin (83 % neutral, the last topic) learned beyond its majority rate? The whole stream with
# 1,000 test tweets per topic over 5 seeds (naive, replay), claritin alone from the pretrained
# model, and naive with 500 training tweets per topic; comparisons into
# results/drift_sentiment_claritin*/ (about an hour on 2 CPU cores).
claritin-report: $(VENV)/.stamp-run
	rm -rf results/drift_sentiment_claritin/evidence results/drift_sentiment_claritin_alone/evidence \
		results/drift_sentiment_claritin_more/evidence
	$(BIN)/clsim run scenarios/drift_sentiment_claritin.yaml --run-id evidence
	$(BIN)/clsim run scenarios/drift_sentiment_claritin_alone.yaml --run-id evidence
	$(BIN)/clsim run scenarios/drift_sentiment_claritin_more.yaml --run-id evidence
	$(BIN)/clsim compare results/drift_sentiment_claritin/evidence --output results/drift_sentiment_claritin
	$(BIN)/clsim compare results/drift_sentiment_claritin_alone/evidence --output results/drift_sentiment_claritin_alone
	$(BIN)/clsim compare results/drift_sentiment_claritin_more/evidence --output results/drift_sentiment_claritin_more

# Does the per-experience linear probe undo EWC? naive and EWC (lambda 1e5 and 1e7) with the head
# probed only on the first topic (scenarios/drift_sentiment_probe_ewc.yaml, 3 seeds, about 20 minutes
# on 2 CPU cores), compared beside the whole reference report (make report's runs) into
# results/drift_sentiment_probe_ewc/.
probe-report: $(VENV)/.stamp-run
	rm -rf results/drift_sentiment_probe_ewc/evidence
	$(BIN)/clsim run scenarios/drift_sentiment_probe_ewc.yaml --run-id evidence
	$(BIN)/clsim compare --pool-seeds results/drift_sentiment/reference results/drift_sentiment_report/reference \
		results/drift_sentiment_report/reference_seed0 results/drift_sentiment_probe_ewc/evidence \
		--baseline naive_probe_once --output results/drift_sentiment_probe_ewc

# The README's online evidence: scenarios/drift_online.yaml (7 strategies x 3 seeds, MiniLM head
# fine-tuning) and its comparison (online table, accuracy over time) into results/drift_online/.
online-report: $(VENV)/.stamp-run
	rm -rf results/drift_online/evidence
	$(BIN)/clsim run scenarios/drift_online.yaml --run-id evidence
	$(BIN)/clsim compare results/drift_online/evidence --baseline periodic_5 --baseline periodic_20 --output results/drift_online

# Federated EWC anchored locally vs at the global model, with plain FedAvg as the baseline
# (scenarios/fed_ewc_anchors.yaml, 3 seeds, about 80 minutes on 2 CPU cores) into results/fed_ewc_anchors/.
anchors-report: $(VENV)/.stamp-run
	rm -rf results/fed_ewc_anchors/evidence
	$(BIN)/clsim run scenarios/fed_ewc_anchors.yaml --run-id evidence
	$(BIN)/clsim compare results/fed_ewc_anchors/evidence --baseline fedavg --baseline fedavg_ewc_local \
		--output results/fed_ewc_anchors

clean:
	rm -rf $(VENV)
