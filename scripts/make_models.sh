#!/usr/bin/env bash
# Reproduce the shipped models from real music in Debian packages.
#
#   make models            (or: bash scripts/make_models.sh [WORK_DIR])
#
# Downloads pushover-data, freedroidrpg-data and hedgewars-data with `apt-get download`
# (no installation), unpacks them with `dpkg -x`, holds four tracks of each corpus out
# for evaluation, trains both models on the 2-core CPU (about an hour, both at once,
# one thread each; rerunning resumes from the last checkpoint) and evaluates them,
# which writes the figures into models/<name>.json and the plots models/<name>.png.
#
# Then the issue-16 models: game-orchestral-hq (same corpus and held-out tracks) and
# speech-czech (the Czech spoken dialogue of fillets-ng-data-cs, one WAV per game
# level, four levels held out), trained on many 1-second excerpts instead of few
# 5-second ones: about ten times the steps per minute, which is what made them
# reach a cleaner reconstruction on a CPU budget. Both at once, one thread each,
# about an hour; rerunning resumes. Then game-orchestral-lite, the same at half the
# width (a quarter of the forward cost), another hour.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-.senseflosser-work/corpus}
PY=${PY:-.venv/bin/python}
mkdir -p "$WORK/debs"

if [ ! -d "$WORK/x/usr/share/pushover" ]; then
  (cd "$WORK/debs" && apt-get download pushover-data freedroidrpg-data hedgewars-data)
  for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/x"; done
fi

layout() {  # layout NAME HELD_OUT_FILES... < list of source files
  local name=$1; shift
  rm -rf "$WORK/$name"; mkdir -p "$WORK/$name/train" "$WORK/$name/heldout"
  while read -r f; do cp "$f" "$WORK/$name/train/"; done
  for h in "$@"; do mv "$WORK/$name/train/$h" "$WORK/$name/heldout/"; done
}
ls "$WORK"/x/usr/share/pushover/themes/*.ogg "$WORK"/x/usr/share/freedroidrpg/data/sound/music/*.ogg \
  | layout game-orchestral greek.ogg space.ogg Suspicion.ogg town.ogg
ls "$WORK"/x/usr/share/games/hedgewars/Data/Music/*.ogg \
  | layout hedgewars Beach.ogg Jungle.ogg Rock.ogg snow.ogg

export SENSEFLOSSER_THREADS=1 OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2
common=(--duration 5 --epochs 25 --steps-per-epoch 20 --batch-size 8 --patience 6 --max-minutes 62
        --models-dir models)
$PY -m senseflosser train --data-dir "$WORK/game-orchestral/train" --name game-orchestral --var-input --seed 1 \
  "${common[@]}" --work-dir "$WORK/run-game-orchestral" \
  --corpus "Debian packages pushover-data (10 themes) and freedroidrpg-data (16 music tracks), 4 tracks held out" \
  --licence "GPL-3+ (pushover-data), GPL-2+ (freedroidrpg-data)" \
  --summary "Orchestral and electronic game music (Pushover, FreedroidRPG). Takes audio of any length." \
  > "$WORK/game-orchestral.log" 2>&1 &
$PY -m senseflosser train --data-dir "$WORK/hedgewars/train" --name hedgewars-fixed --seed 2 \
  "${common[@]}" --work-dir "$WORK/run-hedgewars" \
  --corpus "Debian package hedgewars-data (26 music tracks), 4 tracks held out" \
  --licence "GPL-2 (hedgewars-data)" \
  --summary "Playful game music (Hedgewars). Fixed 5 s input (109 frames): long audio goes through in overlapping 5 s windows." \
  > "$WORK/hedgewars.log" 2>&1 &
wait

# --- models trained on 1 s crops (cleaner reconstruction), and speech ----------------
if [ ! -d "$WORK/xs/usr/share/games/fillets-ng/sound" ]; then
  mkdir -p "$WORK/debs-speech"
  (cd "$WORK/debs-speech" && apt-get download fillets-ng-data-cs)
  dpkg -x "$WORK"/debs-speech/fillets-ng-data-cs_*.deb "$WORK/xs"
fi
if [ ! -d "$WORK/speech-all" ]; then  # 1782 short lines -> 78 files, one per level
  $PY scripts/concat_clips.py "$WORK/speech-all" "$WORK"/xs/usr/share/games/fillets-ng/sound/*/cs
fi
ls "$WORK"/speech-all/*.wav | layout speech-cs cave.wav computer.wav library.wav ufo.wav

# (The shipped game-orchestral-hq ran its first 400 steps with --epochs 100, then was
# resumed with --epochs 55: the cosine decay was shortened to fit the time left.)
short=(--arch bottleneck --width 32 --var-input --duration 1 --batch-size 8 --steps-per-epoch 40
       --patience 100 --models-dir models)
$PY -m senseflosser train --data-dir "$WORK/game-orchestral/train" --name game-orchestral-hq --seed 1 \
  "${short[@]}" --epochs 55 --max-minutes 62 --work-dir "$WORK/run-game-orchestral-hq" \
  --corpus "Debian packages pushover-data (10 themes) and freedroidrpg-data (16 music tracks), 4 tracks held out" \
  --licence "GPL-3+ (pushover-data), GPL-2+ (freedroidrpg-data)" \
  --summary "Orchestral and electronic game music (Pushover, FreedroidRPG), trained on many short excerpts for a cleaner reconstruction. Takes audio of any length." \
  > "$WORK/game-orchestral-hq.log" 2>&1 &
$PY -m senseflosser train --data-dir "$WORK/speech-cs/train" --name speech-czech --seed 3 \
  "${short[@]}" --epochs 50 --max-minutes 50 --work-dir "$WORK/run-speech-czech" \
  --corpus "Debian package fillets-ng-data-cs: Czech spoken dialogue of Fish Fillets NG (1782 lines, 101 min, joined into one file per level), 4 levels held out" \
  --licence "GPL-2 (fillets-ng-data-cs)" \
  --summary "Speech: Czech spoken dialogue (Fish Fillets NG voice acting), trained on many short excerpts. Takes audio of any length." \
  > "$WORK/speech-czech.log" 2>&1 &
wait
# game-orchestral-lite: the same recipe at half the width (16 channels at full resolution, 32 at
# 513 bins): a quarter of the FLOPs, so about four times the steps per minute (12,000 in an hour
# alone on one core) with a cosine decay planned over all of them.
$PY -m senseflosser train --data-dir "$WORK/game-orchestral/train" --name game-orchestral-lite --seed 1 \
  "${short[@]}" --width 16 --epochs 300 --max-minutes 80 --work-dir "$WORK/run-game-orchestral-lite" \
  --corpus "Debian packages pushover-data (10 themes) and freedroidrpg-data (16 music tracks), 4 tracks held out" \
  --licence "GPL-3+ (pushover-data), GPL-2+ (freedroidrpg-data)" \
  --summary "Orchestral and electronic game music (Pushover, FreedroidRPG): the bottleneck net at half the width, a quarter of the FLOPs. Takes audio of any length." \
  > "$WORK/game-orchestral-lite.log" 2>&1
# Every model: its universal adversarial direction (from its training audio), the held-out evaluation
# (every action's dose-response, the calibration, adversarial against fog, the forward cost) and its
# sensitivity map on a held-out excerpt, all written into its card.
finish() {  # finish NAME TRAIN_DIR HELDOUT_DIR MAP_FILE
  [ -f "models/$1.keras" ] || { echo "models/$1.keras was not trained; skipped" >&2; return 0; }
  $PY -m senseflosser adversarial --model "$1" --data-dir "$2" --models-dir models
  $PY -m senseflosser evaluate --model "$1" --data-dir "$3" --models-dir models
  $PY -m senseflosser map -m "$1" -i "$3/$4" --offset 30 --models-dir models -o "$WORK/map-$1" --update-card
}
finish game-orchestral "$WORK/game-orchestral/train" "$WORK/game-orchestral/heldout" greek.ogg
finish hedgewars-fixed "$WORK/hedgewars/train" "$WORK/hedgewars/heldout" Jungle.ogg
finish game-orchestral-hq "$WORK/game-orchestral/train" "$WORK/game-orchestral/heldout" greek.ogg
finish speech-czech "$WORK/speech-cs/train" "$WORK/speech-cs/heldout" cave.wav
finish game-orchestral-lite "$WORK/game-orchestral/train" "$WORK/game-orchestral/heldout" greek.ogg
