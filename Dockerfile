# senseflosser web demo on TensorFlow's GPU image (CUDA and cuDNN included; without a GPU
# it runs on the CPU). Build: docker build -t senseflosser .
# Run:   docker run --gpus all -p 8000:8000 -v senseflosser-data:/data senseflosser
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

WORKDIR /app

# TensorFlow comes with the image, built for its CUDA: install everything else pinned,
# without reinstalling or upgrading it. (The image's Python is the system one, hence
# PIP_BREAK_SYSTEM_PACKAGES where its pip guards it.)
COPY requirements.txt ./
RUN grep -viE '^tensorflow([=<>~ ]|$)' requirements.txt > /tmp/requirements-image.txt \
    && python3 -m pip install -r /tmp/requirements-image.txt \
    && rm /tmp/requirements-image.txt \
    && python3 -c "import tensorflow, keras, flask, flask_limiter, gunicorn, rq, redis, soundfile, soxr, librosa, imageio_ffmpeg; imageio_ffmpeg.get_ffmpeg_exe(); print('tensorflow', tensorflow.__version__, 'keras', keras.__version__)"

# The code, the page and the shipped models (baked in: the server loads only these).
COPY pyproject.toml README.md wsgi.py gunicorn.conf.py ./
COPY senseflosser ./senseflosser
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY models ./models
# The `senseflosser` command too (docker exec ... senseflosser models); the code stays in /app.
# The package installs the library alone: the web app (app/, wsgi.py) is imported from the
# working directory, /app, by gunicorn and by `python3 -m app.worker` (docker-compose.yml).
RUN python3 -m pip install --no-deps -e . \
    && useradd --system --uid 10001 --gid 0 --home-dir /app --shell /usr/sbin/nologin senseflosser \
    && mkdir -p /data/jobs \
    && chown -R senseflosser:0 /data \
    && chmod -R g=u /data

# Uploads, results and job state (keep it on a volume so results survive a restart).
# No debug mode exists in any configuration; the secret key is generated per process
# unless SENSEFLOSSER_SECRET_KEY is given (the app keeps no sessions).
ENV HOST=0.0.0.0 \
    PORT=8000 \
    SENSEFLOSSER_MODELS_DIR=/app/models \
    SENSEFLOSSER_DATA_DIR=/data/jobs \
    SENSEFLOSSER_WORKERS=1 \
    HOME=/tmp
VOLUME ["/data"]

USER 10001:0
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=8); sys.exit(0 if r.status == 200 else 1)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
