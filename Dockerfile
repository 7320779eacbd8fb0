# One image for web, worker, beat and capture. tshark/dumpcap for live capture (no setuid:
# the capture service gets NET_ADMIN/NET_RAW in docker-compose.live.yml instead).
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 NETMON_VAR_DIR=/var/lib/netmon
RUN echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections \
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tshark libpcap0.8 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt
COPY . .
RUN mkdir -p /var/lib/netmon && SECRET_KEY=build-only python manage.py collectstatic --noinput -v 0
RUN useradd --system --home /var/lib/netmon netmon && chown -R netmon /var/lib/netmon
USER netmon
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "netmon.asgi:application"]
