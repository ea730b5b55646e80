"""JupyterLab is where users open the notebooks: start a real server on loopback, open a family notebook
through the server's API with the project's kernel, and run its cells."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def _execute(ws, code: str, timeout: float) -> dict:
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        reply = json.loads(ws.recv())
        if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["msg_type"] == "execute_reply":
            return reply["content"]
    raise TimeoutError(f"no reply within {timeout} s for: {code[:80]}")


@pytest.mark.slow
def test_a_family_notebook_runs_in_a_real_jupyterlab_server(tmp_path):
    import websocket

    port, token = _free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={ROOT}",
            "--ServerApp.open_browser=False",
            "--allow-root",  # CI runs as root
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        assert urllib.request.urlopen(f"{base}/lab?token={token}", timeout=30).status == 200
        model = _api(base, token, "/api/contents/notebooks/synthetic.ipynb")
        nb = nbformat.from_dict(model["content"])
        session = _api(
            base,
            token,
            "/api/sessions",
            "POST",
            {
                "path": "notebooks/synthetic.ipynb",
                "type": "notebook",
                "kernel": {"name": "python3"},
            },
        )
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{session['kernel']['id']}/channels?token={token}",
            timeout=300,
        )
        run_dir = tmp_path / "run"
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            code = cell.source
            if "parameters" in cell.metadata.get("tags", []):
                # Default parameters, except where the record goes.
                code += f"\nrun_dir = {str(run_dir)!r}"
            reply = _execute(ws, code, timeout=300)
            assert reply["status"] == "ok", f"{reply.get('ename')}: {reply.get('evalue')}\n{code[:200]}"
        ws.close()
        record = json.loads((run_dir / "record.json").read_text())
        assert record["status"] == "complete" and record["family"] == "synthetic"
        assert 0 < record["metrics"]["ndcg@10"] <= 1
        _api(base, token, f"/api/sessions/{session['id']}", "DELETE")
    finally:
        server.terminate()
        server.wait(timeout=30)
