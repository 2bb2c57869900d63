"""Results on disk: one directory per experiment configuration, one file per seed.

Layout (in the spirit of locuslab/edge-of-stability: a sweep finds and resumes its runs)::

    <root>/<experiment>/<slug>-<hash>/
        config.json      the configuration (everything but the seeds), canonical JSON
        versions.json    Python, numpy, torch, markovformer, platform of the first writer
        seed_0003.npz    the record of seed 3 (arrays only, no pickles)
        manifest.json    sha256 and size of every file above, and per seed: device, versions

``<hash>`` is the first 12 hex digits of the sha256 of the canonical config JSON. Every file is
written to a temporary name in the same directory, flushed and renamed, so an interrupted write
leaves either the old file or the new one, never half of one; a seed counts as done only once
the manifest lists it. Every read-modify-write of a manifest holds the directory's file lock
(``.lock``), so concurrent writers wait for each other instead of losing entries; a whole
``reproduce`` holds the root's lock (:class:`RootLock`). Loading checks the sha256 of the seed file
and of config.json against the manifest and refuses a corrupt, changed or unlisted file with
:class:`ArtifactError`; a manifest may list only plain file names of its own directory (a seed's
file is always ``seed_XXXX.npz``), so no read leaves the store. :func:`check_store` lists every
problem of a store and, with ``fix``, drops what cannot be trusted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "config_hash",
    "load_or_run",
    "versions",
    "machine_info",
    "machine_text",
    "atomic_write",
    "check_store",
    "RootLock",
]

Record = dict[str, np.ndarray]


class ArtifactError(ValueError):
    """A stored result is missing, corrupt or belongs to another configuration."""


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {o!r}")


def config_hash(config: Mapping) -> str:
    """First 12 hex digits of the sha256 of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_info() -> dict[str, object]:
    """What a run's wall time and its last bits depend on: the CPU model, the cores this process
    may use, and the vector instructions torch's CPU kernels dispatch to (``AVX512``, ``AVX2``,
    ``DEFAULT``; ``ATEN_CPU_CAPABILITY`` changes it)."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def machine_text(info: Mapping | None = None) -> str:
    """``info`` (default: this machine) in words, e.g. "AMD EPYC, 2 cores, AVX512 kernels"."""
    info = machine_info() if info is None else info
    if not info.get("cpu"):
        return "a machine whose CPU was not recorded"
    cores = info.get("cores")
    text = str(info["cpu"]) + (f", {cores} cores" if cores else "")
    cap = info.get("cpu_capability")
    return text + (f", {cap} kernels" if cap else "")


def versions() -> dict[str, object]:
    """Versions of what produced a result, and the machine (:func:`machine_info`)."""
    import torch

    from . import __version__

    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "markovformer": __version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        **machine_info(),
    }


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    An error (a full disk, a read-only folder) leaves the old file, removes the temporary one and
    raises an :class:`OSError` that names ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}", str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}", str(path)) from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")[:80] or "config"


#: The lock file of a result directory (taken around every read-modify-write of its manifest),
#: and of a whole results root (taken by ``markovformer reproduce`` for its whole run).
DIR_LOCK = ".lock"
ROOT_LOCK = ".markovformer.lock"
_SEED_FILE = re.compile(r"seed_(\d{4,})\.npz")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _plain_name(name: object) -> bool:
    """A file name with no directory part: what a manifest may list."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and not os.path.isabs(name)
    )


def _validate_manifest(obj: object, path: Path) -> dict:
    """``obj`` if it has the manifest's shape, else an :class:`ArtifactError` naming ``path``."""

    def bad(why: str) -> ArtifactError:
        return ArtifactError(
            f"manifest {path} is not a results manifest ({why}); "
            f"`markovformer check --out <results> --fix` drops what cannot be trusted"
        )

    if not isinstance(obj, dict):
        raise bad(f"a JSON object was expected, got {type(obj).__name__}")
    for key in ("files", "seeds"):
        if not isinstance(obj.get(key), dict):
            raise bad(f"'{key}' must be an object")
    for name, meta in obj["files"].items():
        if not _plain_name(name):
            raise bad(f"file {name!r} is not a plain file name of this directory")
        if not isinstance(meta, dict) or not _HEX64.fullmatch(str(meta.get("sha256", ""))):
            raise bad(f"file {name!r} has no sha256")
    for seed, entry in obj["seeds"].items():
        if not str(seed).isdigit():
            raise bad(f"seed {seed!r} is not an integer >= 0")
        if not isinstance(entry, dict) or "file" not in entry:
            raise bad(f"seed {seed} has no file")
        expected = f"seed_{int(seed):04d}.npz"
        if entry["file"] != expected:
            raise bad(f"seed {seed} points to {entry['file']!r}, not to {expected!r}")
    return obj


def _file_lock(path: Path, timeout: float = -1):
    from filelock import FileLock

    return FileLock(str(path), timeout=timeout)


_HELD_ROOTS: dict[str, int] = {}  # results roots this process holds, and how many times


class RootLock:
    """The lock of a whole results root: one ``reproduce`` (or ``check --fix``) at a time.

    A second process waits for it (``timeout=-1``, saying once who holds it) or gives up after
    ``timeout`` seconds with an :class:`ArtifactError` naming the holder. The holder's process id,
    host, start time and command are in ``.markovformer.lock.json`` next to the lock.
    """

    def __init__(self, root: str | Path, say: Callable[[str], None] | None = None,
                 timeout: float = -1) -> None:  # fmt: skip
        self.root = Path(root)
        self.say = say or (lambda msg: None)
        self.timeout = timeout
        self.owner_path = self.root / (ROOT_LOCK + ".json")
        self._lock = None

    def holder(self) -> str:
        try:
            o = json.loads(self.owner_path.read_text())
            return (f"process {o['pid']} on {o['host']} (since {o['since']}: "
                    f"{o['command']})")  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def __enter__(self) -> RootLock:
        from filelock import Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        self._key = str(self.root.resolve())
        if _HELD_ROOTS.get(self._key):  # this process holds it already (re-entrant)
            _HELD_ROOTS[self._key] += 1
            return self
        self._lock = _file_lock(self.root / ROOT_LOCK)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            if self.timeout == 0:
                raise ArtifactError(
                    f"{self.root} is in use by {self.holder()}; wait for it to finish"
                ) from None
            self.say(f"waiting for {self.holder()}, which holds {self.root} ...")
            try:
                self._lock.acquire(timeout=self.timeout)
            except Timeout:
                raise ArtifactError(
                    f"{self.root} is still in use by {self.holder()} after {self.timeout:g} s"
                ) from None
        owner = {"pid": os.getpid(), "host": platform.node(),
                 "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join(sys.argv[:6])}  # fmt: skip
        atomic_write(self.owner_path, json.dumps(owner).encode())
        _HELD_ROOTS[self._key] = 1
        return self

    def __exit__(self, *exc) -> None:
        _HELD_ROOTS[self._key] -= 1
        if _HELD_ROOTS[self._key]:
            return
        del _HELD_ROOTS[self._key]
        try:
            self.owner_path.unlink(missing_ok=True)
        finally:
            self._lock.release()


class ArtifactStore:
    """The directory of one configuration of one experiment."""

    def __init__(self, root: str | Path, experiment: str, config: Mapping, slug: str = "") -> None:
        if not experiment or _slugify(experiment) != experiment:
            raise ValueError(
                f"experiment must be a non-empty name of letters, digits and _.=+-, got {experiment!r}"
            )
        self.root = Path(root)
        self.experiment = experiment
        self.config = json.loads(canonical_json(config))
        self.hash = config_hash(self.config)
        name = f"{_slugify(slug)}-{self.hash}" if slug else self.hash
        self.dir = self.root / experiment / name
        self._config_checked: str | None = None  # sha256 of the config.json checked last

    # -- manifest --------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def manifest(self) -> dict:
        """The manifest, checked for its shape (an empty one if the directory has none)."""
        try:
            text = self.manifest_path.read_text()
        except FileNotFoundError:
            return {"files": {}, "seeds": {}}
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(
                f"manifest {self.manifest_path} is not valid JSON ({exc}); "
                "`markovformer check --out <results> --fix` drops what cannot be trusted"
            ) from exc
        return _validate_manifest(obj, self.manifest_path)

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def lock(self):
        """The lock of this directory (a :class:`filelock.FileLock`; re-entrant in a process)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return _file_lock(self.dir / DIR_LOCK)

    def _read_config(self, path: Path) -> object:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc

    def _ensure_header(self, manifest: dict) -> None:
        """Write config.json and versions.json on first use; refuse a foreign config.json."""
        cfg_path = self.dir / "config.json"
        if cfg_path.exists():
            stored = self._read_config(cfg_path)
            if canonical_json(stored) != canonical_json(self.config):
                raise ArtifactError(
                    f"{cfg_path} holds another configuration (hash collision or a hand edit); "
                    "refusing to mix results"
                )
        for name, obj in (("config.json", self.config), ("versions.json", versions())):
            path = self.dir / name
            if name not in manifest["files"]:
                if not path.exists():
                    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())
                data = path.read_bytes()
                manifest["files"][name] = {"sha256": _sha256(data), "bytes": len(data)}

    def check_config(self, manifest: dict | None = None) -> None:
        """Refuse a config.json that differs from the manifest's checksum or from this
        configuration (an :class:`ArtifactError` naming the file)."""
        manifest = self.manifest() if manifest is None else manifest
        path = self.dir / "config.json"
        meta = manifest["files"].get("config.json")
        if meta is None:
            raise ArtifactError(f"{path} is not listed in {self.manifest_path}")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path} is listed in the manifest but missing") from None
        digest = _sha256(data)
        if digest == self._config_checked:
            return
        if digest != meta["sha256"]:
            raise ArtifactError(
                f"{path} was changed after its results were stored (its sha256 does not match "
                f"the manifest); refusing to trust {self.dir}"
            )
        if canonical_json(self._read_config(path)) != canonical_json(self.config):
            raise ArtifactError(f"{path} holds another configuration than {self.dir.name}")
        self._config_checked = digest

    # -- seeds -----------------------------------------------------------------------------

    def seed_file(self, seed: int) -> Path:
        return self.dir / f"seed_{int(seed):04d}.npz"

    def seeds(self) -> list[int]:
        """Seeds whose record is listed in the manifest (not yet verified)."""
        return sorted(int(s) for s in self.manifest().get("seeds", {}))

    def valid_seeds(self) -> list[int]:
        """Listed seeds whose file is present and matches its checksum, under a config.json
        that matches too (empty if the config cannot be trusted). What is listed but missing or
        corrupt counts as not computed: ``reproduce`` recomputes it and mends the manifest."""
        try:
            manifest = self.manifest()
            if not manifest["seeds"]:
                return []
            self.check_config(manifest)
        except ArtifactError:
            return []
        ok = []
        for seed, entry in manifest["seeds"].items():
            path = self.dir / entry["file"]
            meta = manifest["files"].get(entry["file"])
            try:
                if meta is not None and not path.is_symlink():
                    if _sha256(path.read_bytes()) == meta["sha256"]:
                        ok.append(int(seed))
            except OSError:
                pass
        return sorted(ok)

    def save(
        self, seed: int, record: Mapping[str, np.ndarray], info: Mapping | None = None
    ) -> Path:
        """Store the record of one seed (atomically), then list it in the manifest; the
        read-modify-write of the manifest holds the directory's lock."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        arrays = {k: np.asarray(v) for k, v in record.items()}
        bad = [k for k, v in arrays.items() if v.dtype == object]
        if bad:
            raise ValueError(f"record entries must be numeric arrays, got object arrays for {bad}")
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        with self.lock():
            manifest = self.manifest()
            self._ensure_header(manifest)
            path = self.seed_file(seed)
            atomic_write(path, data)
            manifest["files"][path.name] = {"sha256": _sha256(data), "bytes": len(data)}
            manifest["seeds"][str(int(seed))] = {
                "file": path.name,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": versions(),
                **dict(info or {}),
            }
            _manifest_write_hook()
            self._write_manifest(manifest)
        return path

    def load(self, seed: int) -> Record:
        """The verified record of one seed (its file and the config.json it belongs to)."""
        manifest = self.manifest()
        entry = manifest["seeds"].get(str(int(seed)))
        if entry is None:
            raise ArtifactError(f"no stored result for seed {seed} in {self.dir}")
        self.check_config(manifest)
        path = self.dir / entry["file"]
        if path.is_symlink():
            raise ArtifactError(f"{path} is a symbolic link; refusing to read it")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(
                f"{path} is listed in the manifest but missing; `markovformer reproduce` "
                f"recomputes seed {seed}"
            ) from None
        expected = manifest["files"].get(path.name, {}).get("sha256")
        if _sha256(data) != expected:
            raise ArtifactError(
                f"{path} is corrupt: its sha256 does not match the manifest "
                f"(`markovformer reproduce` recomputes seed {seed}; "
                "`markovformer check --out <results> --fix` drops it)"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def info(self, seed: int) -> dict:
        """The manifest entry of one seed (creation time, versions, device, wall time...)."""
        entry = self.manifest()["seeds"].get(str(int(seed)))
        if entry is None:
            raise ArtifactError(f"no stored result for seed {seed} in {self.dir}")
        return dict(entry)

    def export(self, seed: int, dst: ArtifactStore, keys: Sequence[str]) -> Path:
        """Copy the record of one seed, restricted to ``keys``, into another store.

        The copy keeps the original manifest information (creation time, versions, device) and
        records where it came from, so a trimmed artifact stays traceable to its run.
        """
        rec = self.load(seed)
        missing = [k for k in keys if k not in rec]
        if missing:
            raise ArtifactError(f"seed {seed} in {self.dir} has no entries {missing}")
        info = {
            k: v for k, v in self.info(seed).items() if k not in ("file", "created", "versions")
        }
        info["derived_from"] = f"{self.experiment}/{self.dir.name}/seed_{int(seed):04d}.npz"
        info["original_created"] = self.info(seed).get("created")
        info["original_versions"] = self.info(seed).get("versions")
        return dst.save(seed, {k: rec[k] for k in keys}, info)

    def verify(self) -> list[str]:
        """Names of listed files whose checksum does not match (empty if all are intact)."""
        manifest = self.manifest()
        bad = []
        for name, meta in manifest["files"].items():
            path = self.dir / name
            if not path.exists() or _sha256(path.read_bytes()) != meta["sha256"]:
                bad.append(name)
        return bad


def _manifest_write_hook() -> None:
    """Called inside the lock, right before a manifest is written (tests inject a delay here
    to show that concurrent writers wait for each other)."""
    delay = os.environ.get("MARKOVFORMER_TEST_MANIFEST_DELAY")
    if delay:
        import time

        time.sleep(float(delay))


# --------------------------------------------------------------------------------------------
# Checking a whole store
# --------------------------------------------------------------------------------------------


def check_store(root: str | Path, fix: bool = False) -> list[str]:
    """Every problem of the results under ``root``, one line each; with ``fix``, drop what
    cannot be trusted and say so on the same line.

    A result directory is ``<root>/<experiment>/<name>-<hash>/`` with a manifest. Problems: a
    manifest that is not valid JSON or not of the manifest's shape (fix: the directory is
    removed, nothing in it can be verified); a config.json that is missing, changed after the
    results were stored, or whose hash is not the directory's (fix: directory removed); a listed
    seed whose file is missing or corrupt (fix: the entry and the file dropped, ``reproduce``
    recomputes it); a seed file the manifest does not list and left-over temporary files (fix:
    deleted). Lock files are not problems.
    """
    import shutil

    root = Path(root)
    out: list[str] = []
    if not root.is_dir():
        raise ArtifactError(f"no results directory {str(root)!r}")
    for manifest_path in sorted(root.glob("*/*/manifest.json")):
        d = manifest_path.parent
        rel = d.relative_to(root)
        try:
            obj = json.loads(manifest_path.read_text())
            manifest = _validate_manifest(obj, manifest_path)
        except (json.JSONDecodeError, ArtifactError) as exc:
            why = "not valid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            out.append(f"{rel}: manifest unusable: {why}" + _fixed(fix, "directory removed"))
            if fix:
                shutil.rmtree(d)
            continue
        cfg = d / "config.json"
        problem = None
        if "config.json" not in manifest["files"]:
            problem = "config.json is not listed in the manifest"
        elif not cfg.exists():
            problem = "config.json is missing"
        elif _sha256(cfg.read_bytes()) != manifest["files"]["config.json"]["sha256"]:
            problem = "config.json was changed after its results were stored"
        else:
            try:
                h = config_hash(json.loads(cfg.read_text()))
            except json.JSONDecodeError:
                h = None
            if not d.name.endswith(f"-{h}") and d.name != h:
                problem = "config.json does not hash to the directory's name"
        if problem:
            out.append(f"{rel}: {problem}" + _fixed(fix, "directory removed"))
            if fix:
                shutil.rmtree(d)
            continue
        dropped = []
        for seed, entry in sorted(manifest["seeds"].items(), key=lambda kv: int(kv[0])):
            path = d / entry["file"]
            meta = manifest["files"].get(entry["file"])
            if meta is None:
                why = "is listed without a checksum"
            elif not path.exists():
                why = "is listed but missing"
            elif path.is_symlink():
                why = "is a symbolic link"
            elif _sha256(path.read_bytes()) != meta["sha256"]:
                why = "is corrupt (sha256 mismatch)"
            else:
                continue
            out.append(f"{rel}/{entry['file']}: seed {seed} {why}" +
                       _fixed(fix, "dropped; reproduce recomputes it"))  # fmt: skip
            dropped.append(seed)
        listed = {e["file"] for e in manifest["seeds"].values()} | set(manifest["files"])
        for p in sorted(d.iterdir()):
            if p.name in listed or p.name == DIR_LOCK:
                continue
            if _SEED_FILE.fullmatch(p.name):
                out.append(f"{rel}/{p.name}: not listed in the manifest" +
                           _fixed(fix, "deleted"))  # fmt: skip
            elif p.name.endswith(".tmp"):
                out.append(f"{rel}/{p.name}: left-over temporary file" + _fixed(fix, "deleted"))
            else:
                continue
            if fix and p.is_file():
                p.unlink()
        if fix and dropped:
            store_lock = _file_lock(d / DIR_LOCK)
            with store_lock:
                manifest = _validate_manifest(json.loads(manifest_path.read_text()), manifest_path)
                for seed in dropped:
                    entry = manifest["seeds"].pop(seed, None)
                    if entry is not None:
                        manifest["files"].pop(entry["file"], None)
                        (d / entry["file"]).unlink(missing_ok=True)
                atomic_write(manifest_path,
                             json.dumps(manifest, indent=1, sort_keys=True).encode())  # fmt: skip
    return out


def _fixed(fix: bool, what: str) -> str:
    return f" -> {what}" if fix else ""


def load_or_run(
    store: ArtifactStore,
    seeds: Sequence[int],
    run: Callable[[list[int]], Iterable[tuple[Record, Mapping]]],
    chunk_size: int | None = None,
) -> dict[int, Record]:
    """Return the records of ``seeds``, computing (and storing) only the missing ones.

    ``run(chunk)`` trains the seeds of one chunk and yields ``(record, info)`` per seed, in order.
    Each chunk is stored as soon as it finishes, so an interrupted sweep loses at most the chunk
    in progress and the next call resumes with the seeds still missing (a listed seed whose file
    is missing or corrupt counts as missing).
    """
    seeds = [int(s) for s in seeds]
    have = set(store.valid_seeds())
    missing = [s for s in seeds if s not in have]
    size = chunk_size or max(1, len(missing))
    for i in range(0, len(missing), size):
        chunk = missing[i : i + size]
        outputs = list(run(chunk))
        if len(outputs) != len(chunk):
            raise RuntimeError(f"run returned {len(outputs)} records for {len(chunk)} seeds")
        for seed, (record, info) in zip(chunk, outputs, strict=True):
            store.save(seed, record, info)
    return {s: store.load(s) for s in seeds}
