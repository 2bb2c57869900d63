"""The artifact store under corruption, concurrency and interruption, and the engine's promise that
a run's bits do not depend on where or beside what it was trained (issue 17's probes, one test
each, and the Dask cluster of issue 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from markovformer import cli
from markovformer.artifacts import ArtifactError, ArtifactStore, RootLock, check_store
from markovformer.experiments import base
from markovformer.experiments.awm import binary_spec

CONFIG = {"model": {"d": 8}, "chain": {"p": 0.5, "q": 0.8}}
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "markovformer.cli"]


def record(seed: int) -> dict:
    return {"exact_loss": np.linspace(0.7, 0.6, 5) + seed}


def tiny_jobs(steps: int = 4, seeds=(0, 1, 2)):
    specs = [binary_spec(p, q, steps=steps, seq_len=32) for p, q in ((0.5, 0.8), (0.2, 0.3))]
    return [(specs[0], list(seeds)), (specs[1], list(seeds[:1]))]


def same_records(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


# -- 1. every file a load trusts is verified --------------------------------------------------


def test_an_edited_config_json_is_refused_on_load(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    store.save(0, record(0))
    cfg = store.dir / "config.json"
    cfg.write_text(cfg.read_text().replace("0.8", "0.9"))
    fresh = ArtifactStore(tmp_path, "exp", CONFIG)
    with pytest.raises(ArtifactError, match="config.json was changed after its results"):
        fresh.load(0)
    assert fresh.valid_seeds() == []  # reproduce would recompute, not trust it


def test_report_refuses_an_edited_config(tmp_path, capsys):
    args = ["awm-1", "--steps", "3", "--seeds", "1", "--out", str(tmp_path)]
    assert cli.main(["reproduce", *args, "--quiet", "--workers", "1"]) == 0
    for cfg in tmp_path.glob("transformer-v2/*tied*/config.json"):
        cfg.write_text(cfg.read_text().replace('"steps":3', '"steps":4').replace("0.3", "0.4"))
    capsys.readouterr()
    assert cli.main(["report", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert "config.json" in err and "\n" not in err and "Traceback" not in err


# -- 2. concurrent writers --------------------------------------------------------------------

SAVE_ONE = """
import sys, numpy as np
from markovformer.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1], "exp", {"model": {"d": 8}})
store.save(int(sys.argv[2]), {"x": np.arange(3.0)})
"""


def test_concurrent_savers_keep_every_manifest_entry(tmp_path):
    env = dict(os.environ, MARKOVFORMER_TEST_MANIFEST_DELAY="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", SAVE_ONE, str(tmp_path), str(s)], env=env)
        for s in (0, 1)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    store = ArtifactStore(tmp_path, "exp", {"model": {"d": 8}})
    assert store.seeds() == [0, 1] and store.valid_seeds() == [0, 1]


def test_a_second_reproduce_waits_and_trains_nothing(tmp_path):
    args = ["reproduce", "awm-1", "--steps", "3", "--seeds", "2", "--out", str(tmp_path),
            "--quiet", "--workers", "1"]  # fmt: skip
    env = dict(os.environ, MARKOVFORMER_TEST_MANIFEST_DELAY="1")
    first = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, text=True)
    owner = tmp_path / ".markovformer.lock.json"
    deadline = time.time() + 60
    while not owner.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert owner.exists(), "the first reproduce never took the lock"
    second = subprocess.run(CLI + args, capture_output=True, text=True, timeout=120)
    out1, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "run(s) to compute" in out1
    assert f"waiting for process {first.pid}" in second.stdout
    assert "run(s) to compute" not in second.stdout  # everything was there when it got the lock
    assert not owner.exists()


def test_root_lock_can_refuse_instead_of_waiting(tmp_path):
    with RootLock(tmp_path):
        code = "from markovformer.artifacts import RootLock; RootLock(__import__('sys').argv[1], timeout=0).__enter__()"  # noqa: E501
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert res.returncode != 0 and f"process {os.getpid()}" in res.stderr


# -- 3. a missing or corrupt seed is simply missing --------------------------------------------


def test_deleted_or_corrupt_seeds_are_recomputed_and_the_manifest_mended(tmp_path):
    jobs = tiny_jobs()
    first = base.run_specs(jobs, tmp_path)
    store = jobs[0][0].store(tmp_path)
    store.seed_file(1).unlink()
    data = bytearray(store.seed_file(2).read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.seed_file(2).write_bytes(bytes(data))
    assert store.valid_seeds() == [0]
    assert [len(c) for c in base.plan_runs(jobs, tmp_path, 16)] == [2]
    again = base.run_specs(jobs, tmp_path)
    assert store.valid_seeds() == [0, 1, 2] and store.verify() == []
    for s in (1, 2):
        assert same_records(first[0][s], again[0][s])


# -- 4. no read outside the store --------------------------------------------------------------


@pytest.mark.parametrize("target", ["../../../outside/evil.npz", "/tmp/evil.npz"])
def test_a_manifest_cannot_send_a_read_outside_its_directory(tmp_path, target):
    store = ArtifactStore(tmp_path / "out", "exp", CONFIG)
    store.save(0, record(0))
    evil = Path(target) if target.startswith("/") else (store.dir / target)
    evil.parent.mkdir(parents=True, exist_ok=True)
    np.savez(evil, exact_loss=np.zeros(5))
    manifest = json.loads(store.manifest_path.read_text())
    manifest["seeds"]["0"]["file"] = target
    manifest["files"][target] = {"sha256": "0" * 64, "bytes": 1}
    store.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="points to|plain file name"):
        store.load(0)
    assert any("manifest unusable" in line for line in check_store(tmp_path / "out"))


# -- 5. workers: no orphans, and the same bits wherever a run trains ---------------------------


def test_bits_do_not_depend_on_workers_or_chunking(tmp_path):
    jobs = tiny_jobs(steps=6)
    ref = base.run_specs(jobs, tmp_path / "a", chunk_size=16)
    one = base.run_specs(jobs, tmp_path / "b", chunk_size=1)
    dask = base.run_specs(jobs, tmp_path / "c", chunk_size=1, workers=2)
    for r, o, d in zip(ref, one, dask, strict=True):
        for s in r:
            assert same_records(r[s], o[s]) and same_records(r[s], d[s])


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_killing_the_client_leaves_no_worker_behind(tmp_path):
    args = ["reproduce", "awm-1", "--steps", "400", "--seeds", "3", "--chunk-size", "1",
            "--workers", "2", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while len(_descendants(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(6)  # the workers have started their chunks
    workers = _descendants(proc.pid)
    assert len(workers) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(1)
    assert not [w for w in workers if _alive(w)], "worker processes outlived their client"


def test_a_cluster_and_a_killed_worker_give_complete_identical_artifacts(tmp_path):
    from distributed import Client, LocalCluster

    jobs = tiny_jobs(steps=120, seeds=(0, 1, 2, 3))
    ref = base.run_specs(jobs, tmp_path / "ref", chunk_size=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      processes=True) as cluster, Client(cluster) as client:  # fmt: skip
        pids = client.run(os.getpid)
        on_cluster = base.run_specs(jobs, tmp_path / "plain", chunk_size=2, client=client)
        killed: list[int] = []

        def kill_one_busy_worker():
            deadline = time.time() + 60
            while time.time() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(0.5)  # inside the chunk
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                time.sleep(0.05)

        t = threading.Thread(target=kill_one_busy_worker)
        t.start()
        survived = base.run_specs(jobs, tmp_path / "killed", chunk_size=1, client=client)
        t.join()
    assert killed, "no worker was busy long enough to be killed"
    for r, a, b in zip(ref, on_cluster, survived, strict=True):
        for s in r:
            assert same_records(r[s], a[s]) and same_records(r[s], b[s])
    for spec, seeds in jobs:
        assert spec.store(tmp_path / "killed").verify() == []
        assert spec.store(tmp_path / "killed").valid_seeds() == sorted(seeds)


# -- 6. one line where a traceback was ----------------------------------------------------------


@pytest.mark.parametrize(
    "manifest, message",
    [([], "a JSON object was expected"), ({}, "'files' must be an object"),
     ({"files": {}, "seeds": {"0": {}}}, "seed 0 has no file")],
)  # fmt: skip
def test_a_manifest_of_the_wrong_shape_is_one_clear_error(tmp_path, manifest, message):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    store.save(0, record(0))
    store.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message) as err:
        store.load(0)
    assert str(store.manifest_path) in str(err.value)


def test_an_unparseable_config_names_its_file(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    store.save(0, record(0))
    (store.dir / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=str(store.dir / "config.json")):
        store.save(1, record(1))


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno

    store = ArtifactStore(tmp_path, "exp", CONFIG)
    store.save(0, record(0))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="cannot write .*seed_0001.npz: No space left") as err:
        store.save(1, record(1))
    assert err.value.filename.endswith("seed_0001.npz")
    assert store.seeds() == [0] and not [p for p in store.dir.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize(
    "argv, message",
    [(["reproduce", "awm-1", "--steps", "99999999999999"], "expected at most 10,000,000"),
     (["reproduce", "awm-1", "--seeds", "99999999999"], "expected at most 1,000,000"),
     (["reproduce", "awm-1", "--out", ""], "expected a directory, got an empty path")],
)  # fmt: skip
def test_absurd_arguments_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_a_chunk_that_cannot_fit_is_refused_before_allocating():
    spec = binary_spec(0.5, 0.8, steps=base.MAX_STEPS)
    with pytest.raises(ValueError, match="needs about .* GiB and this machine has"):
        base.check_fits([[(spec, s) for s in range(100_000)]])


def test_claims_for_an_unknown_chapter_is_an_error(capsys):
    assert cli.main(["claims", "--chapter", "99", "--out", str(ROOT / "book" / "data")]) == 1
    assert "no claims for chapter(s) 99" in capsys.readouterr().err


def test_ctrl_c_ends_in_one_line(tmp_path):
    args = ["reproduce", "awm-1", "--steps", "2000", "--seeds", "1", "--out", str(tmp_path),
            "--quiet", "--workers", "1"]  # fmt: skip
    # SIGINT back to its default in the child: a test run started in the background (where the
    # shell ignores SIGINT, and children inherit that) must still see Ctrl-C
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.time() + 60
        while not (tmp_path / ".markovformer.lock.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave the training run behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("markovformer: interrupted")


# -- check and --fix ----------------------------------------------------------------------------


def test_check_lists_every_problem_and_fix_drops_them(tmp_path, capsys):
    jobs = tiny_jobs()
    base.run_specs(jobs, tmp_path)
    store = jobs[0][0].store(tmp_path)
    store.seed_file(0).unlink()
    data = bytearray(store.seed_file(1).read_bytes())
    data[-10] ^= 1
    store.seed_file(1).write_bytes(bytes(data))
    (store.dir / ".seed_0005.npz.abc.tmp").write_bytes(b"half")
    other = jobs[1][0].store(tmp_path)
    cfg = other.dir / "config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert cli.main(["check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "seed 0 is listed but missing" in out and "seed 1 is corrupt" in out
    assert "left-over temporary file" in out and "config.json was changed" in out
    assert "4 problem(s) found" in out
    assert cli.main(["check", "--out", str(tmp_path), "--fix"]) == 0
    assert "-> dropped" in capsys.readouterr().out
    assert not other.dir.exists() and store.seeds() == [2]
    assert cli.main(["check", "--out", str(tmp_path)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


# -- verify and --dry-run ---------------------------------------------------------------------


def _tiny_experiment():
    from markovformer.experiments.base import Experiment

    jobs = tiny_jobs(steps=5, seeds=(0, 1))

    def summary(results, jobs):
        return {"final": [round(float(r[s]["exact_loss"][-1]), 3) for r in results for s in r]}

    return Experiment("tiny", "a tiny experiment", lambda n, s: jobs, lambda r, j: None, 2,
                      summary=summary)  # fmt: skip


def test_verify_finds_the_same_bits_and_catches_a_changed_run(tmp_path):
    from markovformer.verify import verify

    exp = _tiny_experiment()
    exp.run(tmp_path)
    verdict = verify(exp, tmp_path)
    assert verdict.ok and verdict.report_same and verdict.runs == 2
    assert all(v == 0 for c in verdict.configs for v in c.curve_dev.values())
    assert verdict.lines()[-1].startswith("PASS tiny: 2 run(s) trained again")
    spec = exp.jobs(None, None)[0][0]
    rec = spec.store(tmp_path).load(0)
    rec["exact_loss"] = rec["exact_loss"] + 0.01  # a stored run that this code did not make
    spec.store(tmp_path).save(0, rec, spec.store(tmp_path).info(0))
    verdict = verify(exp, tmp_path)
    assert not verdict.ok and verdict.report_same is False
    assert verdict.configs[0].line(1e-3).startswith("FAIL") and "exact_loss" in verdict.lines()[0]


def test_dry_run_counts_what_is_missing_and_estimates_it(tmp_path, capsys):
    args = ["awm-1", "--steps", "3", "--seeds", "1", "--out", str(tmp_path)]
    assert cli.main(["reproduce", *args, "--dry-run", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "awm-1          2 run(s) missing, about" in out and "with 2 worker(s)" in out
    assert not list(tmp_path.glob("transformer-v2/*"))  # a dry run trains and writes nothing
    assert cli.main(["reproduce", *args, "--quiet", "--workers", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["reproduce", *args, "--dry-run"]) == 0
    assert "awm-1          complete" in capsys.readouterr().out
