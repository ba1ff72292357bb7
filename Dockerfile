# proctor serve in a container. WebRTC media uses UDP on ephemeral ports, so run it
# with host networking (docker run --network host ...) or publish a UDP range and set
# PROCTOR_RTC__ICE_HOST_ADDRESSES to the address clients reach.
FROM python:3.11-slim

# OpenCV (pulled in by mediapipe) needs libGL and GLib at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md config.yaml ./
COPY proctor proctor
COPY signaling signaling
COPY static static
COPY models models
RUN pip install --no-cache-dir . && proctor models verify

ENV OPENBLAS_NUM_THREADS=1 \
    PROCTOR_SERVER__HOST=0.0.0.0 \
    PROCTOR_SERVER__DATA_DIR=/data \
    PROCTOR_STORE=sqlite:////data/proctor.db \
    PROCTOR_CLIPS=file:///data/clips
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["proctor", "serve"]
