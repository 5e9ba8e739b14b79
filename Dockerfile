# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t dermascan .                          every service; the command picks one:
#       python -m gateway | inference_worker | ingest_service | trainer_service serve | embedded
#   docker build --target worker -t dermascan-worker .   the inference worker alone, without
#       TensorFlow (requirements-worker.txt): it serves each version's LiteRT file (model.tflite)
# A version saved without a LiteRT file, or DERMASCAN_INFERENCE_ENGINE=tensorflow, needs the full
# image for its workers too.

# --- build: every service's pinned dependencies in a virtual environment ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# --- build-worker: the worker's dependencies only (no TensorFlow, Keras, scikit-learn, MLflow) ---
FROM python:3.11-slim AS build-worker
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements-worker.txt /tmp/requirements-worker.txt
RUN pip install -r /tmp/requirements-worker.txt

# --- worker: the inference worker's code and the bundled model, run as a non-root user ---
FROM python:3.11-slim AS worker
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 dermascan \
 && useradd --system --uid 10001 --gid dermascan --create-home --home-dir /home/dermascan dermascan
COPY --from=build-worker /opt/venv /opt/venv
WORKDIR /app
COPY shared/ shared/
COPY inference_worker/ inference_worker/
# A worker seeds an empty registry with the bundled model (all of it: its Keras and LiteRT files,
# manifest and training evidence), as every service does.
COPY models/base/ models/base/
RUN mkdir -p /app/var/model-cache && chown -R dermascan:dermascan /app/var
USER dermascan:dermascan
EXPOSE 9100
CMD ["python", "-m", "inference_worker"]

# --- runtime (the default image): the venv, the code and the model artefacts, non-root ---
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN groupadd --system --gid 10001 dermascan \
 && useradd --system --uid 10001 --gid dermascan --create-home --home-dir /home/dermascan dermascan
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY shared/ shared/
COPY gateway/ gateway/
COPY inference_worker/ inference_worker/
COPY ingest_service/ ingest_service/
COPY trainer_service/ trainer_service/
COPY embedded/ embedded/
# The sample dataset that seeds the embedded mode's empty store.
COPY data/ data/
# The bundled model (models/base) seeds an empty registry; backbones are for training.
COPY models/ models/
# The model card the web UI links to (GET /model-card).
COPY MODEL_CARD.md ./
# var/ holds the workers' model cache, the trainer's scratch space and the embedded mode's local
# store: writable by the user (a named volume mounted on a directory that exists in the image
# starts with that directory's owner).
RUN mkdir -p /app/var/model-cache /app/var/trainer && chown -R dermascan:dermascan /app/var
USER dermascan:dermascan
EXPOSE 8080 9100 9101 9102
CMD ["python", "-m", "gateway"]
