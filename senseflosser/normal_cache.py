"""A cache of normal outputs, so a re-run of the same audio and model pays only for the damage.

The normal output (the undamaged model's) depends only on the decoded audio
segment, the model file and the chunking, never on the damage. Each run that
computed (or reused) one keeps it beside its own outputs, in a *home* folder
(the raw waveform and its metrics; the WAV, spectrogram and peaks files it
wrote stay where they are), and the cache's folder holds only a small index
file per key pointing at the newest home. An entry therefore lives exactly as
long as the outputs it belongs to: delete those, and the entry is gone too.
:func:`senseflosser.render.floss_to_dir` uses it when given one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_ENTRIES = 64
"""Index entries kept; the least recently used go first."""


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
    """An index of normal outputs under ``root`` (one small file per key).

    Parameters
    ----------
    root : str or os.PathLike
        Created when the first entry is stored.
    max_entries : int
        Older index entries are deleted beyond this many.
    max_age_s : float or None
        Index entries not used for this long are deleted too.
    """

    def __init__(self, root: str | os.PathLike, *, max_entries: int = MAX_ENTRIES,
                 max_age_s: float | None = None) -> None:
        self.root = Path(root)
        self.max_entries = int(max_entries)
        self.max_age_s = max_age_s

    def get(self, key: str) -> CachedNormal | None:
        """The entry under ``key``, or ``None`` (missing, or its outputs were deleted)."""
        index = self.root / key
        try:
            home = Path(index.read_text().strip())
            meta = json.loads((home / "entry.json").read_text())
            raw = np.load(home / "normal.npy", allow_pickle=False)
            files = {label: {suffix: Path(path) for suffix, path in by_suffix.items()}
                     for label, by_suffix in meta["files"].items()}
            if not all(p.is_file() for by in files.values() for p in by.values()):
                raise FileNotFoundError(home)
            os.utime(index)  # recently used
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                index.unlink()  # the outputs it pointed at have been deleted
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return CachedNormal(raw=raw, metrics=dict(meta["metrics"]), files=files)

    def put(self, key: str, raw: np.ndarray, metrics: dict, files: dict[str, dict[str, Path]], *,
            home: str | os.PathLike) -> None:
        """Store the normal output in ``home`` (beside the outputs ``files`` lists) and index it under ``key``.

        The newest home wins, so the entry outlives older runs whose outputs are deleted.
        """
        home = Path(home).resolve()
        try:
            home.mkdir(parents=True, exist_ok=True)
            np.save(home / "normal.npy", np.asarray(raw, dtype=np.float32), allow_pickle=False)
            names = {label: {suffix: str(Path(path).resolve()) for suffix, path in by_suffix.items()}
                     for label, by_suffix in files.items()}
            (home / "entry.json").write_text(json.dumps({"metrics": metrics, "files": names}, allow_nan=True))
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{key}.{secrets.token_hex(4)}.tmp"
            tmp.write_text(str(home))
            os.replace(tmp, self.root / key)
        except OSError:  # a full disk: the cache is only an optimisation
            return
        self.prune()

    def prune(self) -> None:
        """Delete the least recently used index entries beyond ``max_entries``, and those unused for ``max_age_s``."""
        try:
            entries = [(p.stat().st_mtime, p) for p in self.root.iterdir() if not p.name.startswith(".")]
        except OSError:
            return
        entries.sort(reverse=True)
        now = time.time()
        for k, (mtime, old) in enumerate(entries):
            if k >= self.max_entries or (self.max_age_s is not None and now - mtime > self.max_age_s):
                with contextlib.suppress(OSError):
                    old.unlink()


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (same file system), else copy it."""
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
