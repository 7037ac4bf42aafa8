# The smsrx image: one image for every process; the command picks the role
# (receiver, consumer status-projection, consumer analytics, subscriptions reconcile,
# db migrate, topics create). See docker-compose.yml and docs/operations.md.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY smsrx ./smsrx
COPY receiver ./receiver
COPY consumers ./consumers
COPY subscriptions ./subscriptions
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SMSRX_STATE_DIR=/var/lib/smsrx \
    SMSRX_SPOOL_DIR=/var/lib/smsrx/spool
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/smsrx smsrx \
    && mkdir -p /var/lib/smsrx/spool \
    && chown -R smsrx:smsrx /var/lib/smsrx
USER smsrx
WORKDIR /var/lib/smsrx
# 8443: carrier callbacks (HTTPS); 9101-9104: /metrics of receiver, status-projection,
# analytics and subscriptions.
EXPOSE 8443 9101 9102 9103 9104
ENTRYPOINT ["smsrx"]
CMD ["--help"]
