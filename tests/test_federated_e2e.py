"""End to end on real Flower processes: a SuperLink and two SuperNodes on loopback over TLS
(certificates from ``clsim flower certs``), the smoke scenario's federated strategy started
with stock ``flwr run``, the results folder checked, and every started process stopped by PID.

Slow: a SuperNode starts a fresh ``flwr-clientapp`` process (torch, Avalanche) per message.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clsim.cli import app as cli
from clsim.federated.launch import LocalFederation

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 480


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_superlink_and_two_supernodes_over_tls_run_the_smoke_federation(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    runner = CliRunner()
    certs = tmp_path / "certs"
    assert runner.invoke(cli, ["flower", "certs", str(certs)]).exit_code == 0

    fed = LocalFederation(clients=2, workdir=tmp_path / "procs", certs=certs)
    try:
        fed.start()
        assert len(fed.procs) == 3
        res = runner.invoke(cli, ["flower", "connection", "local-tls", "--address", fed.address,
                                  "--certs", str(certs), "--default"])
        assert res.exit_code == 0, res.output
        out = tmp_path / "results"
        run_config = f"scenario='{ROOT / 'scenarios' / 'smoke_fed.yaml'}' strategy='fedavg' output='{out}' run-id='e2e'"
        proc = fed.run_app(ROOT, "local-tls", run_config, timeout=RUN_TIMEOUT_S)
        logs = proc.stdout[-3000:] + proc.stderr[-2000:]
        assert proc.returncode == 0, logs
        assert "Successfully started run" in proc.stdout and "ServerApp raised" not in proc.stdout, logs

        run_dir = out / "smoke_fed" / "e2e"
        doc = json.loads((run_dir / "fedavg" / "metrics.json").read_text())
        R = np.asarray(doc["accuracy_matrix"], dtype=float)
        assert doc["complete"] and R.shape == (2, 2) and np.all((R >= 0) & (R <= 1))
        assert doc["rounds"] == 2 and doc["failures"] == 0 and min(doc["bytes_up"]) > 0
        assert [c["partition-id"] for c in doc["clients_info"]] == [0, 1]
        assert (run_dir / "scenario.yaml").is_file() and "fedavg" in (run_dir / "summary.csv").read_text()
        assert any(f.name.startswith("events.out.tfevents") for f in (run_dir / "fedavg").iterdir())
    finally:
        fed.stop(timeout=20)
    assert all(p.poll() is not None for p in fed.procs), "a started process outlived stop()"
    assert fed.groups_alive() == [], "a helper process of a started one is still running"
