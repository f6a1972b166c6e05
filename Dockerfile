# Example image for the decision service (not built in CI).
#   docker build -t policyengine .
#   docker run -p 8181:8181 -v $PWD/state:/state policyengine
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY policyengine ./policyengine
COPY grammar ./grammar
COPY reports ./reports
COPY rules ./rules
COPY data ./data
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 policyengine \
 && mkdir /state && chown policyengine /state
USER policyengine
VOLUME /state
EXPOSE 8181
# The audit key lives in the volume; generate it on first start if it is missing.
# Inside a container the server must listen on all interfaces to be reachable: put it
# behind TLS (--tls-cert/--tls-key) or a token (--auth-token-file) before exposing it.
CMD ["sh", "-c", "test -f /state/policyengine.key || policyengine keys generate --out /state/policyengine.key; exec policyengine serve --rules /app/rules --db /state/audit.duckdb --key /state/policyengine.key --host 0.0.0.0 --port 8181"]
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8181/ready').status == 200 else 1)"
