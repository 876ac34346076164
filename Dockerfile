# One image for both roles of docker-compose.yml and deploy/k8s/: `sweep` workers (the default
# entrypoint) and the MLflow tracking server (entrypoint overridden to `mlflow`; mlflow is a
# dependency of the project, its basic-auth app included). It runs as an unprivileged user
# (uid 10001, numeric so Kubernetes' runAsNonRoot can check it).
FROM python:3.11-slim

ENV TF_CPP_MIN_LOG_LEVEL=3 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    PYTHONUNBUFFERED=1

RUN groupadd --gid 10001 sweep && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin sweep

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sweep/ sweep/
COPY objectives/ objectives/
RUN pip install --no-cache-dir .

# The MLflow server's auth settings (no credentials in it: those come from the environment).
COPY docker/mlflow-auth.ini /etc/mlflow/basic_auth.ini

# Mount points the non-root user writes to; Docker copies this ownership into new named volumes.
RUN mkdir -p /work /data /mlartifacts /mlflow-auth && chown sweep:sweep /work /mlartifacts /mlflow-auth

USER 10001:10001
WORKDIR /work
ENTRYPOINT ["sweep"]
CMD ["--help"]
