# kafka-celery-bridge: one image for the bridge, the Celery worker and Flower
# (docker-compose.yml picks the command). No secrets are baked in: configuration
# comes from BRIDGE_CONFIG and BRIDGE_* environment variables at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The demo app (tasks/, celeryconfig.py) and examples/bridge.toml are read from /app, the
# working directory (`celery -A tasks` imports from there), not from the installed package.
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 app

# Celery warns when a worker runs as root.
USER app

CMD ["python", "-m", "bridge", "run"]
