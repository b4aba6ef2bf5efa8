# One image for the three services; docker-compose.yml picks the module to run.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector collector
COPY processors processors
COPY projections projections
COPY schemas schemas
COPY sinks sinks
COPY devstack devstack
COPY learnstream learnstream
RUN pip install --no-cache-dir .
ENV LEARNSTREAM_DATA_DIR=/var/lib/learnstream
