"""``python -m api``: serve the API with uvicorn on API_HOST:API_PORT, logging as JSON."""

import uvicorn

from agent_runner.process import exit_now
from agent_runner.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("api.main:app", host=settings.api_host, port=settings.api_port, log_config=None)
    exit_now(0)
