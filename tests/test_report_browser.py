"""The HTML report is the page users read: load it in a real headless Chromium (Debian's package, which
.ci/run installs) and check it renders every family present in the records without console errors."""

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)


@pytest.mark.slow
def test_report_loads_in_chromium_without_console_errors(synthetic_runs):
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium on this machine: .ci/run installs Debian's chromium package; "
            "run `apt-get install chromium` to enable this test"
        )
    report = synthetic_runs["report"]
    profile_dir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        for line in proc.stderr:
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].rsplit(":", 1)[1])
                break
        assert port, "Chromium did not open its DevTools port"
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(p for p in pages if p["type"] == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page"):
            dt.call(f"{domain}.enable")
        dt.call("Page.navigate", url=report.as_uri())
        dt.wait_for("Page.loadEventFired")
        text = dt.call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)[
            "result"
        ]["value"]
        images = dt.call(
            "Runtime.evaluate",
            returnByValue=True,
            expression=("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"),
        )["result"]["value"]
        errors = [
            e
            for e in dt.events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]
        assert errors == [], errors
        assert "The paper's claims, tested" in text
        assert "Controlled synthetic testbed" in text
        assert images >= 1, "the embedded figures render"
        rendered = dt.call(
            "Runtime.evaluate",
            returnByValue=True,
            expression=(
                "(() => { const t = document.getElementById('claims-table');"
                " const f = document.getElementById('forest-plot');"
                " return {rows: t ? t.tBodies[0].rows.length : 0, width: t ? t.offsetWidth : 0,"
                " plot: f ? (f.complete && f.naturalWidth > 0 && f.offsetWidth > 0) : false}; })()"
            ),
        )["result"]["value"]
        assert rendered["rows"] >= 1 and rendered["width"] > 0, "the claims table renders"
        assert rendered["plot"], "the forest plot renders"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile_dir, ignore_errors=True)
