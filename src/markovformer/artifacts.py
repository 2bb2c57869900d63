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
the manifest lists it. Loading checks the sha256 against the manifest and refuses a corrupt or
unlisted file with :class:`ArtifactError`.
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
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")[:80] or "config"


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

    # -- manifest --------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"files": {}, "seeds": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"manifest {self.manifest_path} is not valid JSON: {exc}") from exc

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def _ensure_header(self, manifest: dict) -> None:
        """Write config.json and versions.json on first use; refuse a foreign config.json."""
        cfg_path = self.dir / "config.json"
        if cfg_path.exists():
            stored = json.loads(cfg_path.read_text())
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

    # -- seeds -----------------------------------------------------------------------------

    def seed_file(self, seed: int) -> Path:
        return self.dir / f"seed_{int(seed):04d}.npz"

    def seeds(self) -> list[int]:
        """Seeds whose record is listed in the manifest (not yet verified)."""
        return sorted(int(s) for s in self.manifest().get("seeds", {}))

    def save(
        self, seed: int, record: Mapping[str, np.ndarray], info: Mapping | None = None
    ) -> Path:
        """Store the record of one seed (atomically), then list it in the manifest."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        arrays = {k: np.asarray(v) for k, v in record.items()}
        bad = [k for k, v in arrays.items() if v.dtype == object]
        if bad:
            raise ValueError(f"record entries must be numeric arrays, got object arrays for {bad}")
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        manifest = self.manifest()
        self.dir.mkdir(parents=True, exist_ok=True)
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
        self._write_manifest(manifest)
        return path

    def load(self, seed: int) -> Record:
        """The verified record of one seed."""
        manifest = self.manifest()
        entry = manifest.get("seeds", {}).get(str(int(seed)))
        if entry is None:
            raise ArtifactError(f"no stored result for seed {seed} in {self.dir}")
        path = self.dir / entry["file"]
        if not path.exists():
            raise ArtifactError(f"{path} is listed in the manifest but missing")
        data = path.read_bytes()
        expected = manifest["files"].get(path.name, {}).get("sha256")
        if _sha256(data) != expected:
            raise ArtifactError(
                f"{path} is corrupt: its sha256 does not match the manifest "
                f"(delete it and re-run to recompute seed {seed})"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def info(self, seed: int) -> dict:
        """The manifest entry of one seed (creation time, versions, device, wall time...)."""
        return dict(self.manifest()["seeds"][str(int(seed))])

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


def load_or_run(
    store: ArtifactStore,
    seeds: Sequence[int],
    run: Callable[[list[int]], Iterable[tuple[Record, Mapping]]],
    chunk_size: int | None = None,
) -> dict[int, Record]:
    """Return the records of ``seeds``, computing (and storing) only the missing ones.

    ``run(chunk)`` trains the seeds of one chunk and yields ``(record, info)`` per seed, in order.
    Each chunk is stored as soon as it finishes, so an interrupted sweep loses at most the chunk
    in progress and the next call resumes with the seeds still missing.
    """
    seeds = [int(s) for s in seeds]
    have = set(store.seeds())
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
