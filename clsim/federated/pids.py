"""The processes a launch started, on disk: ``<run>/flower/pids.json``.

A deployment records itself (the launcher) and every process it started or saw descend from
them, each with its start time, as they appear. If the launcher is killed outright (``kill
-9``, the OOM killer) the Flower processes it started live on in sessions of their own — a
SuperLink still holding its port, a ServerApp still writing into the run folder. The next
launch in that folder (``clsim flower launch --resume``) stops exactly those: a PID counts only
if its start time matches too, so a PID the system has since given to another process is left
alone.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil

from clsim.sinks import atomic_write_text

PIDS_FILE = "pids.json"


def record_pids(workdir: Path, commands: dict[int, str], seen: dict[int, psutil.Process]) -> None:
    """Write ``workdir/pids.json``: this process (the launcher) and ``commands`` (PID -> command)."""
    entries = []
    for pid, command in commands.items():
        try:
            entries.append({"pid": pid, "command": command, "started": (seen.get(pid) or psutil.Process(pid)).create_time()})
        except psutil.Error:
            pass
    me = psutil.Process()
    atomic_write_text(Path(workdir) / PIDS_FILE, json.dumps(
        {"launcher": {"pid": me.pid, "started": me.create_time()}, "processes": entries}, indent=1))


def _alive(entry: dict) -> psutil.Process | None:
    """The process ``entry`` records, if it still runs (same PID *and* start time: not a reused PID)."""
    try:
        proc = psutil.Process(int(entry["pid"]))
        if abs(proc.create_time() - float(entry["started"])) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except (psutil.Error, KeyError, ValueError, TypeError):
        pass
    return None


def recorded_launcher(workdir: Path) -> int | None:
    """The PID of the launcher that recorded ``workdir/pids.json``, if it still runs."""
    try:
        data = json.loads((Path(workdir) / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return None
    proc = _alive(data.get("launcher", {}))
    return proc.pid if proc is not None and proc.pid != os.getpid() else None


def stop_recorded(workdir: Path, timeout: float = 20.0) -> list[tuple[int, str]]:
    """Stop what an earlier launch in ``workdir`` started and left running (its launcher was killed):
    SIGTERM, then SIGKILL after ``timeout`` s. Only processes recorded in ``pids.json`` whose PID
    and start time both match; returns those stopped as (PID, command)."""
    try:
        data = json.loads((Path(workdir) / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return []
    found = [(p, str(e.get("command", "?"))) for e in data.get("processes", []) if (p := _alive(e)) is not None]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for proc, _ in found:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        _, still = psutil.wait_procs([p for p, _ in found], timeout=wait)
        if not still:
            break
    return [(p.pid, c) for p, c in found]
