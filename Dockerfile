FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY pollers ./pollers
COPY destinations ./destinations
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
CMD ["sluice", "serve", "--help"]
