# syntax=docker/dockerfile:1
#
# Message Metrics API image: GraphQL + legacy REST on uvicorn, talking to MongoDB.
#
#   docker build -t message-metrics .
#   docker run -p 8000:8000 -e MONGODB_URI='mongodb://...' message-metrics
#
# Only the runtime dependencies of pyproject.toml are installed (pinned by
# constraints.txt); the `embedded` extra (SecantusDB, GPL-2.0) and the `dev`/`bench`
# extras never enter the image. Nothing secret is baked in: MONGODB_URI is given at run
# time. See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm

# --- build: a virtualenv with the dependencies, and a wheel of the application ----------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src

# Dependencies first, from the project metadata alone, so this layer is rebuilt only
# when pyproject.toml or constraints.txt change, not on every code change.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt

# Then the application, as a wheel without dependencies (they are all in the venv above).
COPY README.md ./
COPY graph/ graph/
COPY resolvers/ resolvers/
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

# The dependencies' layer stays cached while only the code changes; the application is a
# small wheel installed on top of it.
COPY --from=build /opt/venv /opt/venv
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-deps --no-index /wheels/*.whl

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# /health answers 200 while the database is reachable and 503 when it is not; urlopen
# raises on anything but 2xx, so python exits 1 (unhealthy). No curl in slim images.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# `serve` is the one way the service starts, here as with `make run`: it writes its own
# JSON request log, trusts X-Forwarded-For only from FORWARDED_ALLOW_IPS (unset: from
# nobody), and exits when MONGODB_URI is unset since the image has no embedded database.
CMD ["message-metrics", "serve", "--host", "0.0.0.0", "--port", "8000"]
