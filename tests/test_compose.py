"""docker-compose.yml checked statically: no Docker engine runs on the CI machines, so these
tests hold the file to the code (settings, commands, search attributes, ports)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_runner.settings import Settings
from devtools.processes import DYNAMIC_CONFIG, SEARCH_ATTRIBUTES
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def test_the_stack_has_every_part(services: dict[str, Any]) -> None:
    assert {
        "postgresql",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "api",
        "worker",
        "proxy",
    } <= (services.keys())
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image}"
        assert not image.endswith(":latest"), name


def test_temporal_runs_on_postgresql(services: dict[str, Any]) -> None:
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["depends_on"]["postgresql"]["condition"] == "service_healthy"
    dynamic_config = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"].rsplit("/", 1)[-1]
    assert (ROOT / "deploy" / "temporal" / dynamic_config).exists()


def test_setup_registers_every_search_attribute(services: dict[str, Any]) -> None:
    script = " ".join(services["temporal-setup"]["command"])
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"{name}:{kind}" in script
    assert "--type $$kind" in script


def test_the_server_hands_slots_over_without_delay(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "temporal" / "dynamicconfig.yaml").read_text())
    for key, value in DYNAMIC_CONFIG.items():
        assert str(config[key][0]["value"]) == value


def test_our_services_use_the_image_with_known_settings(services: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in ("api", "worker"):
        service = services[name]
        assert service["build"] == "."
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name} sets settings that do not exist: {unknown}"
        assert service["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert service["depends_on"]["temporal-setup"]["condition"] == (
            "service_completed_successfully"
        )
        assert "healthcheck" in service
    assert services["api"]["command"] == ["python", "-m", "api"]
    assert services["worker"]["command"] == ["python", "worker.py"]
    assert (ROOT / "worker.py").exists()
    assert (ROOT / "api" / "__main__.py").exists()


def test_the_proxy_reaches_the_api_port(services: dict[str, Any]) -> None:
    api_port = services["api"]["environment"]["API_PORT"]
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"server api:{api_port}" in nginx
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert "8000:80" in services["proxy"]["ports"]
    assert "8233:8080" in services["temporal-ui"]["ports"]


def test_worker_metrics_port_matches_its_healthcheck(services: dict[str, Any]) -> None:
    worker = services["worker"]
    port = worker["environment"]["WORKER_METRICS_ADDRESS"].rsplit(":", 1)[1]
    assert f":{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    assert Path(ROOT / "Dockerfile").exists()
