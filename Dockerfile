# One image for both roles of docker-compose.yml: `sweep` workers (the default entrypoint) and the
# MLflow tracking server (entrypoint overridden to `mlflow`; mlflow is a dependency of the project).
FROM python:3.11-slim

ENV TF_CPP_MIN_LOG_LEVEL=3 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    PYTHONUNBUFFERED=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sweep/ sweep/
COPY objectives/ objectives/
RUN pip install --no-cache-dir .

WORKDIR /work
ENTRYPOINT ["sweep"]
CMD ["--help"]
