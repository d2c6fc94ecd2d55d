# The llmwatch image: one image for every llmwatch process (worker, migrate, and later gateway,
# trainer, deployer); the command picks the role. Production settings come from LLMWATCH_* env
# (see docker-compose.yml and streams/settings.py).
#
#   docker build -t llmwatch .                            # worker + gateway + training (EXTRAS=all)
#   docker build --build-arg EXTRAS=serving -t llmwatch .  # only what the gateway needs

# --- build the project wheel (needs the package folders; dependencies are installed separately) ---
FROM python:3.11-slim AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ---
FROM python:3.11-slim
ARG EXTRAS="all"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Dependencies first, read from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml /tmp/pyproject.toml
# An extra may name others (`all` is llmwatch[worker,serving,dashboard,train]): those are expanded here.
RUN python -c "import os, tomllib; \
p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
reqs = lambda e: [x for r in p['optional-dependencies'][e] for x in \
    (sum((reqs(s) for s in r[9:-1].split(',')), []) if r.startswith('llmwatch[') else [r])]; \
extras = [e.strip() for e in os.environ.get('EXTRAS', '').split(',') if e.strip()]; \
print('\n'.join(p['dependencies'] + [r for e in extras for r in reqs(e)]))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels /tmp/pyproject.toml

# Non-root; the data dir holds the Faust data dir and worker.json (nothing durable: Kafka and
# ClickHouse are the durable record in production).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin llmwatch \
    && mkdir -p /var/lib/llmwatch/adapters /home/llmwatch/.cache/huggingface \
    && chown -R llmwatch:llmwatch /var/lib/llmwatch /home/llmwatch/.cache
USER llmwatch
WORKDIR /var/lib/llmwatch
ENV LLMWATCH_DATA_DIR=/var/lib/llmwatch \
    LLMWATCH_WEB_HOST=0.0.0.0 \
    LLMWATCH_WEB_PORT=6066
EXPOSE 6066

ENTRYPOINT ["llmwatch"]
CMD ["worker"]
