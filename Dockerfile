# syntax=docker/dockerfile:1
# One image for every DermaScan service; the command picks the service:
#   python -m gateway | inference_worker | ingest_service | trainer_service serve | embedded

# --- build: install the pinned dependencies into a virtual environment ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# --- runtime: the venv, the code and the model artefacts, run as a non-root user ---
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
