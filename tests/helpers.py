"""Helpers shared by the test modules: the repository, the venv's tools, an example copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # neuroflow-recover, snakemake, heudiconv, qsiparc
SNAKEFILE = REPO / "workflow" / "Snakefile"
# the secret part of the test webhook's URL (tests check it never leaks)
TOKEN = "T0SECRETTOKEN/B0HOOKSECRET/xyzzyWebhookToken42"


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: the venv's bin first on PATH, no NEUROFLOW_DB."""
    env = dict(os.environ)
    env.pop("NEUROFLOW_DB", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def copy_example(root: Path, subjects: int, sessions: int) -> Path:
    """The workflow, profiles, config and example (stand-ins, config) copied to `root`, with
    generated DICOMs of `subjects` x `sessions` under example/data."""
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake", "results", "work", "data")
    for name in ("workflow", "profiles", "config"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    (root / "example").mkdir()
    shutil.copytree(REPO / "example" / "standins", root / "example" / "standins", ignore=ignore)
    for name in ("make_example_data.py", "config.yaml"):
        shutil.copy2(REPO / "example" / name, root / "example" / name)
    subprocess.run(
        [sys.executable, "example/make_example_data.py", "--out", "example/data",
         "--subjects", str(subjects), "--sessions", str(sessions)],
        cwd=root, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return root


class Webhook:
    """A real HTTP server on loopback that records the JSON bodies POSTed to it."""

    def __init__(self, port: int = 0):
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{TOKEN}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
