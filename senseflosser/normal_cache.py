"""A cache of normal outputs, so a re-run of the same audio and model pays only for the damage.

The normal output (the undamaged model's) depends only on the decoded audio
segment, the model file and the chunking, never on the damage. An entry is
keyed by a hash of all three and holds the raw normal waveform, its metrics
and the files written from it (and from the decoded input): WAV, spectrogram,
peaks. :func:`senseflosser.render.floss_to_dir` uses it when given one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_ENTRIES = 8
"""Entries kept; the least recently used go first (a 10-minute track's entry is about 80 MB)."""


@dataclass
class CachedNormal:
    """One entry: ``raw`` normal waveform, its ``metrics`` and ``files[label][suffix] -> path``."""

    raw: np.ndarray
    metrics: dict
    files: dict[str, dict[str, Path]] = field(default_factory=dict)


def cache_key(y: np.ndarray, model_sha256: str, *, chunking: str) -> str:
    """The key of a normal output: the decoded samples, the model file and how the audio is chunked."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(y, dtype=np.float32).tobytes())
    h.update(f"|{model_sha256}|{chunking}|v1".encode())
    return h.hexdigest()


class NormalCache:
    """Normal outputs on disk under ``root`` (one folder per key).

    Parameters
    ----------
    root : str or os.PathLike
        Created when the first entry is stored.
    max_entries : int
        Older entries are deleted beyond this many.
    max_age_s : float or None
        Entries not used for this long are deleted too.
    """

    def __init__(self, root: str | os.PathLike, *, max_entries: int = MAX_ENTRIES,
                 max_age_s: float | None = None) -> None:
        self.root = Path(root)
        self.max_entries = int(max_entries)
        self.max_age_s = max_age_s

    def get(self, key: str) -> CachedNormal | None:
        """The entry under ``key``, or ``None`` (missing or unreadable)."""
        folder = self.root / key
        try:
            meta = json.loads((folder / "entry.json").read_text())
            raw = np.load(folder / "normal.npy", allow_pickle=False)
            files = {label: {suffix: folder / name for suffix, name in by_suffix.items()}
                     for label, by_suffix in meta["files"].items()}
            if not all(p.is_file() for by in files.values() for p in by.values()):
                return None
            os.utime(folder)  # recently used
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return CachedNormal(raw=raw, metrics=dict(meta["metrics"]), files=files)

    def put(self, key: str, raw: np.ndarray, metrics: dict, files: dict[str, dict[str, Path]]) -> None:
        """Store an entry (its files are linked or copied in); an existing entry is kept."""
        if (self.root / key).is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
        try:
            np.save(tmp / "normal.npy", np.asarray(raw, dtype=np.float32), allow_pickle=False)
            names: dict[str, dict[str, str]] = {}
            for label, by_suffix in files.items():
                for suffix, path in by_suffix.items():
                    name = f"{label}{suffix}"
                    link_or_copy(Path(path), tmp / name)
                    names.setdefault(label, {})[suffix] = name
            (tmp / "entry.json").write_text(json.dumps({"metrics": metrics, "files": names}, allow_nan=True))
            os.rename(tmp, self.root / key)
        except OSError:  # a full disk or a concurrent writer: the cache is only an optimisation
            shutil.rmtree(tmp, ignore_errors=True)
            return
        self.prune()

    def prune(self) -> None:
        """Delete the least recently used entries beyond ``max_entries``, and those unused for ``max_age_s``."""
        import time

        try:
            entries = [(p.stat().st_mtime, p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return
        entries.sort(reverse=True)
        now = time.time()
        for k, (mtime, old) in enumerate(entries):
            if k >= self.max_entries or (self.max_age_s is not None and now - mtime > self.max_age_s):
                shutil.rmtree(old, ignore_errors=True)


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (same file system), else copy it."""
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
