# One image for both roles: the API (default) or, with `python worker.py`, a worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.8
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project && rm -rf /root/.cache

COPY agent_runner ./agent_runner
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY cli ./cli
COPY worker.py README.md ./
# The project itself, so its entry points (the built-in agents) are installed. A team's own
# agents: `FROM` this image, then `RUN uv pip install --python /opt/venv/bin/python <package>`.
RUN uv sync --frozen --no-dev --no-editable && rm -rf /root/.cache

RUN useradd --system --uid 10001 --no-create-home agent
USER agent

ENV API_HOST=0.0.0.0 API_PORT=8000
EXPOSE 8000
CMD ["python", "-m", "api"]
