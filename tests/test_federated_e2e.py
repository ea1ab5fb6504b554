"""The README's manual path on real processes: a SuperLink and two SuperNodes over TLS (stock
Flower processes), and ``flwr run`` with a run config naming the scenario file — the same results
folder as ``clsim run``. (``clsim flower launch``, with SuperNode authentication, is tested in
test_deploy.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 900


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_superlink_and_two_supernodes_over_tls_run_a_scenario_file(tmp_path):
    from clsim.federated.certs import make_certs
    from clsim.federated.processes import APP_ROOT, Deployment

    certs = tmp_path / "certs"
    make_certs(certs)
    dep = Deployment(tmp_path / "procs", certs, auth=False)
    out = tmp_path / "results"
    run_config = tmp_path / "run_config.toml"
    run_config.write_text(tomli_w.dumps({"scenario": str(ROOT / "scenarios" / "smoke_fed.yaml"), "strategy": "fedavg",
                                         "output": str(out), "run-id": "e2e"}))
    try:
        dep.start_superlink()
        for i in range(2):
            dep.start_supernode(f"supernode{i}", i, 2)
        dep.wait_joined(["supernode0", "supernode1"])
        run_id, lines = dep.submit(APP_ROOT, run_config)
        assert run_id is not None, "\n".join(lines[-40:])
        assert dep.run_status(run_id) == "finished:completed", "\n".join(lines[-40:])
    finally:
        leftovers = dep.stop()
    assert leftovers == [], "a started process (or one it spawned) outlived stop()"

    run_dir = out / "smoke_fed" / "e2e"
    doc = json.loads((run_dir / "fedavg" / "seed_0" / "metrics.json").read_text())
    R = np.asarray(doc["accuracy_matrix"], dtype=float)
    assert doc["complete"] and R.shape == (2, 2) and np.all((R >= 0) & (R <= 1))
    assert doc["rounds"] == 2 and doc["failures"] == 0 and min(doc["bytes_up"]) > 0
    assert [c["partition-id"] for c in doc["clients_info"]] == [0, 1]
    assert (run_dir / "plan.json").is_file() and "fedavg" in (run_dir / "summary.csv").read_text()
    assert any(f.name.startswith("events.out.tfevents") for f in (run_dir / "fedavg" / "seed_0").iterdir())
