# CPU image: onnxruntime backend, the shipped model store baked in, runs as a non-root user.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY model_store ./model_store
COPY service ./service
COPY clients ./clients
COPY training ./training
RUN pip install . && useradd --create-home --uid 10001 app
# Numeric, the uid created above: the runtime (Kubernetes' runAsNonRoot too) can tell it is not root (DL3066).
USER 10001

ENV EMOTION_STORE_PATH=/app/model_store
EXPOSE 8000
# Exec form (DL3025): no shell in between. Exit 0 once /health/ready is 200; 1 on 503, refusal or timeout.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"]

# The same command the README and the tests use.
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
