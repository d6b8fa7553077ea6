"""A private, headless Node-RED for the tests: a flow file, a free port, a temp dir.

Node-RED comes from the npm registry (``scripts/install-services`` installs it into
``$CARBONLINK_NODE_RED_DIR``, default ``~/.cache/carbonlink/node-red``); the fixture
installs it there itself when it is missing, and skips only when npm cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.servers import HOST, ServerNotInstalledError, _port_accepts, _Server

NODE_RED_VERSION = "4"
NODE_RED_DIR = Path(
    os.environ.get("CARBONLINK_NODE_RED_DIR", Path.home() / ".cache/carbonlink/node-red")
)
INSTALL_TIMEOUT_S = 600.0


def node_red_script() -> Path:
    """Node-RED's entry point, installed from npm into :data:`NODE_RED_DIR` if missing;
    :class:`ServerNotInstalledError` says why when it cannot be."""
    script = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
    if script.is_file():
        return script
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerNotInstalledError(
            "node and npm are not installed: run scripts/install-services"
        )
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--prefix", str(NODE_RED_DIR),
         f"node-red@{NODE_RED_VERSION}"],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not script.is_file():
        raise ServerNotInstalledError(
            f"npm could not install node-red@{NODE_RED_VERSION} (is the npm registry "
            f"reachable?): {result.stderr.strip()[-500:]}"
        )
    return script


class NodeRedServer(_Server):
    """Node-RED running ``flows`` (a list of nodes, as the editor exports them)."""

    name = "node-red"
    binary = "node"
    scheme = "http"
    start_timeout_s = 120.0  # Node-RED loads its runtime and nodes: slow on a busy machine

    def __init__(self, directory: Path | str, flows: list[dict[str, Any]]) -> None:
        super().__init__(directory)
        self.flows = flows

    def _write_config(self) -> list[str]:
        script = node_red_script()
        (self.directory / "flows.json").write_text(json.dumps(self.flows))
        settings = {
            "uiHost": HOST,
            "uiPort": self.port,
            "flowFile": "flows.json",
            "credentialSecret": False,
            "diagnostics": {"enabled": False},
            "telemetry": {"enabled": False},  # no update checks: the test runs offline
            "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        }
        settings_file = self.directory / "settings.js"
        settings_file.write_text(f"module.exports = {json.dumps(settings)};\n")
        return [str(script), "--settings", str(settings_file), "--userDir", str(self.directory)]

    def _is_ready(self) -> bool:
        return _port_accepts(self.port) and "Started flows" in self.output_path.read_text(
            errors="replace"
        )
