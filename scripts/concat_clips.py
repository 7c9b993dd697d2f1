"""Join short clips into one WAV per folder (for corpora of short recordings, e.g. spoken lines).

    python scripts/concat_clips.py OUT_DIR FOLDER...

Each FOLDER's audio files (sorted by name) are decoded to mono 22050 Hz and joined
with 0.25 s of silence between them into OUT_DIR/<name>.wav, where <name> is the
folder's parent's name when the folder itself is a language code (as in
``sound/<level>/cs``), else the folder's name. Training and evaluation need
excerpts several seconds long, which single lines of dialogue are not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from senseflosser import audio

GAP_S = 0.25


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    gap = np.zeros(int(GAP_S * audio.SAMPLE_RATE), np.float32)
    for folder in map(Path, argv[1:]):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in audio.AUDIO_EXTENSIONS)
        if not files:
            continue
        name = folder.parent.name if len(folder.name) <= 3 else folder.name
        parts = []
        for f in files:
            parts += [audio.load(f), gap]
        sf.write(out / f"{name}.wav", np.concatenate(parts), audio.SAMPLE_RATE, subtype="PCM_16")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
