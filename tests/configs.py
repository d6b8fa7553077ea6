"""Build private config directories for tests: unique plant ids, the repo's factor sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


def write_config(
    directory: Path,
    *,
    plants: dict[str, str],
    broker_url: str = "mqtt://127.0.0.1:1883",
    store: str = "sqlite:///store.sqlite",
    client_id: str = "carbonlink-platform",
) -> Path:
    """Copy repository plant files under new ids (``{new_id: repo_plant_id}``)."""
    (directory / "plants").mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_CONFIG / "factors", directory / "factors", dirs_exist_ok=True)
    for new_id, source_id in plants.items():
        plant = yaml.safe_load((REPO_CONFIG / "plants" / f"{source_id}.yaml").read_text())
        plant["id"] = new_id
        (directory / "plants" / f"{new_id}.yaml").write_text(yaml.safe_dump(plant))
    services = yaml.safe_load((REPO_CONFIG / "carbonlink.yaml").read_text())
    services["broker"]["url"] = broker_url
    services["platform"]["store"] = store
    services["platform"]["client_id"] = client_id
    services["agent"]["batch_max_delay_s"] = 0.1
    path = directory / "carbonlink.yaml"
    path.write_text(yaml.safe_dump(services))
    return path
