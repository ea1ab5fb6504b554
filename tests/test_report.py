"""Comparing strategies: `clsim compare` (table, markdown, CSV, PNGs) and the TensorBoard
hparams dashboard of a run folder, read back through TensorBoard's own hparams backend."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import plan_of
from typer.testing import CliRunner

from clsim import report
from clsim.cli import app
from clsim.results import partial_doc, write_hparams_experiment, write_strategy_results
from clsim.tables import write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_scenario, tokens_for):
    """Two real (tiny) runs of naive + replay, written as `clsim run` writes them."""
    from clsim.lifecycle import run_strategy

    root = tmp_path_factory.mktemp("results") / "unit"
    dirs = []
    for run_id, seed in (("runA", 0), ("runB", 1)):
        sc = make_scenario(seed=seed, stream={"source": "synthetic", "experiences": ["food", "tech"],
                                              "train_per_experience": 32, "test_per_experience": 16},
                           strategies=["naive", "replay"])
        tokens = tokens_for(sc)
        run_dir = root / run_id
        plan = plan_of(sc)
        docs = []
        for spec in plan.strategies:
            run_strategy(plan, spec, tokens, str(run_dir))
            docs.append(partial_doc(run_dir, spec.name, [seed]))  # the strategy over its (one) seed
            write_strategy_results(run_dir / spec.name, docs[-1])
        write_summary(run_dir, docs)
        write_hparams_experiment(run_dir)
        dirs.append(run_dir)
    return dirs


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_compare_two_runs_writes_table_markdown_csv_and_pngs(runs, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", *map(str, runs), "--output", str(out)])
    assert res.exit_code == 0, res.output
    labels = ["runA/naive", "runA/replay", "runB/naive", "runB/replay"]  # names clash across runs: prefixed
    for label in labels:
        assert label in res.output

    with open(out / "comparison.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["strategy"] for r in rows] == labels + ["majority class"]  # the reference row last
    assert "bytes_up" not in rows[0]  # no federated run here
    for r, (run, name) in zip(rows, [(runs[0], "naive"), (runs[0], "replay"), (runs[1], "naive"), (runs[1], "replay")]):
        doc = json.loads((run / name / "metrics.json").read_text())
        assert float(r["acc"]) == pytest.approx(doc["acc"])
        assert float(r["forgetting"]) == pytest.approx(doc["forgetting"])
        assert float(r["train_s"]) == pytest.approx(doc["costs"]["train_seconds"])
        assert int(r["samples"]) == doc["costs"]["samples_trained"]

    md = (out / "comparison.md").read_text(encoding="utf-8")
    first = md.split("\n\n")[2]  # title, legend, then the table
    assert len([line for line in first.splitlines() if line.startswith("| ")]) == 1 + len(labels) + 1  # + majority
    for name in report.PLOTS:
        assert f"({name})" in md
        w, h = _png_size(out / name)
        assert w > 300 and h > 200


def test_one_run_keeps_plain_names_scenario_order_and_writes_next_to_it(runs):
    res = CliRunner().invoke(app, ["compare", str(runs[0])])
    assert res.exit_code == 0, res.output
    entries = report.load([runs[0]])
    assert [e.label for e in entries] == ["naive", "replay"]  # summary.csv order, no prefixes
    assert (runs[0] / "comparison.md").is_file() and (runs[0] / "accuracy_matrices.png").is_file()


def test_accuracy_curves_are_the_matrix_columns(runs):
    """The per-experience panel plots exactly the zero-shot value then column j of R."""
    e = report.load([runs[0] / "naive"])[0]
    doc = json.loads((runs[0] / "naive" / "metrics.json").read_text())
    assert e.R.tolist() == doc["accuracy_matrix"]
    assert e.zero_shot.tolist() == doc["zero_shot"]


def _federated_copy(run_dir, name="fedlike", up=(1000, 1000), down=(2000, 2000)):
    """A strategy folder with a seed's metrics.json with bytes (what a federated run adds), and
    the document over seeds."""
    doc = json.loads((run_dir / "naive" / "seed_0" / "metrics.json").read_text())
    doc.update(strategy=name, bytes_up=list(up), bytes_down=list(down), rounds=len(up))
    (run_dir / name / "seed_0").mkdir(parents=True)
    (run_dir / name / "seed_0" / "metrics.json").write_text(json.dumps(doc))
    write_strategy_results(run_dir / name, partial_doc(run_dir, name, [0]))
    return doc


def test_bytes_columns_and_communication_scatter_for_federated_runs(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    _federated_copy(run)
    entries = report.load([run])
    cols, rows = report.rows(entries)
    assert {"bytes_up", "bytes_down"} <= set(cols)
    by = {r[0]: dict(zip(cols, r)) for r in rows}
    assert by["fedlike"]["bytes_up"] == 2000 and by["fedlike"]["bytes_down"] == 4000
    assert by["naive"]["bytes_up"] is None
    plain = report.plot_cost_quality(report.load([runs[0]]), tmp_path / "plain.png")
    fed = report.plot_cost_quality(entries, tmp_path / "fed.png")
    assert _png_size(fed)[0] > _png_size(plain)[0] * 1.4  # a second panel: accuracy vs bytes


def test_compare_bad_input_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "metrics.json" in res.output
    bad = tmp_path / "bad" / "s"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text('{"strategy": "s"}')
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "experiences" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ TensorBoard hparams dashboard
def dashboard(logdir):
    """What TensorBoard's hparams dashboard shows: (experiment, {session: (hparams, metrics)})."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    backend = backend_context.Context(tb)
    ctx = context.RequestContext()
    exp = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=1000,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                          api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups

    def value(v):
        return v.string_value if v.HasField("string_value") else v.number_value

    sessions = {g.name: ({k: value(v) for k, v in g.hparams.items()},
                         {m.name.tag: m.value for m in g.metric_values}) for g in groups}
    return exp, sessions


def test_hparams_dashboard_lists_every_strategy_with_final_metrics(runs):
    exp, sessions = dashboard(runs[0])
    columns = {h.name for h in exp.hparam_infos}
    # the union of all strategies' hyper-parameters, not just the first run's
    assert {"strategy", "preset", "lr", "finetune", "precision", "BalancedReplayPlugin.mem_size"} <= columns
    metrics = {m.name.tag for m in exp.metric_infos}
    assert {"hparam/acc", "hparam/bwt", "hparam/fwt", "hparam/forgetting", "hparam/train_seconds"} <= metrics
    assert set(sessions) == {"naive/seed_0", "replay/seed_0"}  # TensorBoard runs: <strategy>/seed_<k>
    for run, (hp, values) in sessions.items():
        name = run.split("/")[0]
        doc = json.loads((runs[0] / run / "metrics.json").read_text())
        assert hp["strategy"] == name and hp["preset"] == name
        assert values["hparam/acc"] == pytest.approx(doc["acc"])
        assert values["hparam/forgetting"] == pytest.approx(doc["forgetting"])
        assert values["hparam/bwt"] == pytest.approx(doc["bwt"])
        assert values["hparam/train_seconds"] == pytest.approx(doc["costs"]["train_seconds"], rel=1e-5)
    assert sessions["replay/seed_0"][0]["BalancedReplayPlugin.mem_size"] == 300  # the preset's
    assert "BalancedReplayPlugin.mem_size" not in sessions["naive/seed_0"][0]
    assert sessions["naive/seed_0"][0]["seed"] == 0


def test_hparams_dashboard_adds_bytes_of_federated_runs_and_is_idempotent(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    doc = _federated_copy(run, up=(1500, 500), down=(3000, 1000))
    write_hparams_experiment(run)
    write_hparams_experiment(run)  # rerun (e.g. after a resume): still one experiment, no duplicates
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    exp, sessions = dashboard(run)
    assert {"hparam/bytes_up", "hparam/bytes_down"} <= {m.name.tag for m in exp.metric_infos}
    assert set(sessions) == {"naive/seed_0", "replay/seed_0", "fedlike/seed_0"}
    hp, values = sessions["fedlike/seed_0"]
    assert hp["strategy"] == "fedlike"
    assert values["hparam/bytes_up"] == 2000 and values["hparam/bytes_down"] == 4000
    assert values["hparam/acc"] == pytest.approx(doc["acc"])
    assert "hparam/bytes_up" not in sessions["naive/seed_0"][1]


def _run_of(tmp_path, name: str, seeds: list[int], edit=None, freeze_layers: int = 0):
    """A run folder holding the committed FedAvg baseline of the anchors evidence for ``seeds``
    (aggregated as `clsim run` writes it, with a plan.json naming the model); ``edit`` changes
    every seed's document."""
    from clsim.results import aggregate

    (tmp_path / name).mkdir()
    (tmp_path / name / "plan.json").write_text(json.dumps({"scenario": {
        "model": {"pretrained": "minilm", "finetune": "partial", "freeze_layers": freeze_layers}, "stream": {}},
        "strategies": [{"name": "fedavg", "preset": "fedavg", "train": {"epochs": 1}}]}))

    ref = REFERENCE
    docs = []
    for s in seeds:
        doc = json.loads((ref / f"seed_{s}" / "metrics.json").read_text())
        if edit:
            edit(doc)
        write_strategy_results(tmp_path / name / "fedavg" / f"seed_{s}", doc)
        docs.append(doc)
    write_strategy_results(tmp_path / name / "fedavg", aggregate(docs, seeds))
    return tmp_path / name


REFERENCE = Path(__file__).parent.parent / "results" / "fed_ewc_anchors" / "evidence" / "fedavg"


def test_seeds_of_one_strategy_from_two_runs_are_one_entry(tmp_path):
    """`make run`'s seed 0 and the report's seeds 1, 2 compare as the three-seed strategy."""
    whole = report.load([REFERENCE])[0].doc
    a, b = _run_of(tmp_path, "a", [0]), _run_of(tmp_path, "b", [1, 2])
    assert len(report.load([a, b])) == 2  # pooled only when asked
    (entry,) = report.load([a, b], pool_seeds=True)
    assert entry.label == "fedavg" and entry.doc["seeds"] == [0, 1, 2] and entry.more == (b,)
    for m in ("acc", "bal_acc", "forgetting", "learning_acc"):
        assert entry.doc[m] == pytest.approx(whole[m]) and entry.doc["intervals"][m] == pytest.approx(whole["intervals"][m])
        assert entry.doc["per_seed"][m] == pytest.approx(whole["per_seed"][m])
    assert f"in run `{tmp_path.name}/a` and run `{tmp_path.name}/b` (seeds 0, 1, 2)" in report.markdown([entry])
    # the same seed twice, or another recipe: two entries, not one
    assert len(report.load([a, _run_of(tmp_path, "c", [0, 1])], pool_seeds=True)) == 2
    other = _run_of(tmp_path, "d", [1, 2], edit=lambda d: d["hparams"].update(epochs=2))
    assert [e.label for e in report.load([a, other], pool_seeds=True)] == ["a/fedavg", "d/fedavg"]
    frozen = _run_of(tmp_path, "e", [1, 2], freeze_layers=2)  # same metrics' hparams, another model
    assert len(report.load([a, frozen], pool_seeds=True)) == 2
    (tmp_path / "b" / "fedavg" / "seed_2" / "metrics.json").unlink()  # a seed still running
    assert report.load([a, b], pool_seeds=True)[0].doc["seeds_done"] == [0, 1]


def test_a_strategy_is_read_from_its_seeds_documents(tmp_path):
    """The seeds' documents are the source of truth: a strategy file written without the per-seed
    diagonals (an older clsim) is aggregated again, so the per-topic tables can pair seeds."""
    run = _run_of(tmp_path, "a", [0, 1, 2])
    stale = json.loads((run / "fedavg" / "metrics.json").read_text())
    del stale["per_seed"]["diagonal"], stale["intervals"]["diagonal_margin"]
    (run / "fedavg" / "metrics.json").write_text(json.dumps(stale))
    (entry,) = report.load([run])
    diag = {str(s): np.diag(json.loads((REFERENCE / f"seed_{s}" / "metrics.json").read_text())["accuracy_matrix"])
            for s in (0, 1, 2)}
    assert entry.doc["per_seed"]["diagonal"] == {s: pytest.approx(v.tolist()) for s, v in diag.items()}
    (run / "fedavg" / "seed_2" / "metrics.json").unlink()  # a seed's document missing: the file as written
    (entry,) = report.load([run])
    assert "diagonal" not in entry.doc["per_seed"]
