"""Notebook kernels forked from a warm server, so that a run does not pay for importing torch and its
domain library again (benchmarks/bench_reproduce.py: "setup").

Each grid point is still one papermill run of its notebook in a kernel process of its own; only the way
that process starts changes. A fresh kernel is ``python -m ipykernel_launcher -f <connection file>``:
a new interpreter that imports ipykernel, then the notebook's imports (torch, pandas, the family's
pipeline and its domain library: 3-8 s of CPU per run here). A warm kernel is forked from a server that
has already imported the modules the notebook's code cells import at top level (read from the
notebook itself) and what those modules declare they import lazily during a run (``WARM_IMPORTS``), and
only then runs ipykernel's own entry point. The child gets the environment and
working directory jupyter_client asked for, a session of its own (so interrupts reach it as they reach a
fresh kernel), and exits when its jupyter_client does (ipykernel's parent poller).

What a forked child shares with its siblings is import-time state only: the server never runs a model,
never seeds, never touches CUDA, and every notebook seeds Python, NumPy and torch itself
(``runtime.configure``), so a run's metrics are the same bits as in a fresh kernel
(tests/test_warm_kernels.py checks it). A server is keyed by the notebook's imports, the working
directory and the full environment minus jupyter's per-kernel ``JPY_*`` variables, because libraries read
variables such as HF_HUB_OFFLINE or OMP_NUM_THREADS when they are imported; a launch whose key has no
server gets one. Anything unusual (a kernel command other than ipykernel's, a server that does not come
up) falls back to a fresh kernel.

``EMBSYM_FRESH_KERNELS=1`` (or ``embsym run --fresh-kernels``) turns it off.
"""

from __future__ import annotations

import ast
import atexit
import functools
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from .records import KERNEL_ENV

FRESH_ENV = "EMBSYM_FRESH_KERNELS"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
SERVER_START_TIMEOUT_S = 300.0
_LAUNCHER = ("-m", "ipykernel_launcher")


def enabled() -> bool:
    return os.environ.get(FRESH_ENV, "") in ("", "0")


def notebook_imports(notebook: Path) -> tuple[str, ...]:
    """The modules a notebook's code cells import at top level, in order of appearance; ``from a.b import
    c`` gives ``a.b`` and ``?a.b.c`` (imported too where ``c`` is a submodule). Cells that are not Python
    (magics) are skipped."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    modules: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse("".join(cell.get("source", "")))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                modules += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.append(node.module)
                modules += [f"?{node.module}.{alias.name}" for alias in node.names if alias.name != "*"]
    return tuple(dict.fromkeys(modules))


def preload(modules) -> list[str]:
    """Import a notebook's modules (``notebook_imports``), then what they declare they import lazily;
    returns the latter."""
    for name in modules:
        if not name.startswith("?"):
            importlib.import_module(name)
        else:
            try:  # "from a import c": c may be a submodule, or a function, class, constant of a
                importlib.import_module(name[1:])
            except ModuleNotFoundError as e:
                if e.name != name[1:]:
                    raise
    lazy: list[str] = []
    while new := [name for name in declared_warm_imports() if name not in lazy]:
        for name in new:  # a declared module may declare more (an adapter imported lazily)
            importlib.import_module(name)
        lazy += new
    return lazy


def declared_warm_imports() -> list[str]:
    """What the loaded embsym modules import lazily at run time (their ``WARM_IMPORTS``: the domain
    library kept out of the light imports of the CLI and the specs, the modules torch pulls in at the
    first optimizer step), imported by the server too: every run imports them anyway (1-9 s each)."""
    names: list[str] = []
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "embsym_lib":
            names += getattr(module, "WARM_IMPORTS", ())
    return list(dict.fromkeys(names))


# --- the server (a process of its own: ``python -m embsym_lib.warm_kernels <socket> <module>...``) ---


def serve(socket_path: str, modules: list[str]) -> None:
    # ipykernel selects the inline backend through this variable before a notebook imports matplotlib;
    # here matplotlib is imported first, so the variable must already be there (the child's environment,
    # which does not have it, is restored before ipykernel starts and sets it again).
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    import ipykernel.kernelapp  # noqa: F401 - what every kernel imports first

    preload(modules)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked child could not use CUDA
        raise SystemExit("importing the notebook's modules initialized CUDA: kernels must start fresh")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(16)
    parent = os.getppid()
    running: set[int] = set()
    exited: dict[int, int] = {}
    while os.getppid() == parent:  # the runner that started this server is gone: stop
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                exited[pid] = os.waitstatus_to_exitcode(status)
        if not select.select([server], [], [], 0.2)[0]:
            continue
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile("r").readline())
            op = request.get("op")
            if op == "launch":
                pid = os.fork()
                if pid == 0:
                    _become_kernel(request, server, conn)
                running.add(pid)
                reply: dict[str, Any] = {"pid": pid}
            elif op == "status":
                pid = int(request["pid"])
                reply = {"running": pid in running, "returncode": exited.get(pid)}
            elif op == "stop":
                conn.sendall(b'{"stopped": true}\n')
                break
            else:  # "ping"
                reply = {"ready": True}
            conn.sendall((json.dumps(reply) + "\n").encode())
    server.close()


def _become_kernel(request: dict[str, Any], *inherited: socket.socket) -> None:
    """In the forked child: become what ``python -m ipykernel_launcher <argv>`` would be."""
    code = 1
    try:
        for s in inherited:
            s.close()
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[KERNEL_ENV] = "warm"  # the run's record says how its kernel started
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
            del sys.path[0]  # as ipykernel_launcher does; IPython adds the working directory back
        sys.argv = ["ipykernel_launcher", *request["argv"]]
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must never fall back into the server's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# --- the runner's side: one server per key, started on first use ---


class WarmServer:
    def __init__(self, modules: tuple[str, ...], env: dict[str, str], cwd: str):
        self.folder = tempfile.mkdtemp(prefix="embsym-kernels-")
        self.socket_path = os.path.join(self.folder, "server.sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, self.socket_path, *modules],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops the server itself
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the warm kernel server exited with {self.process.returncode} while importing"
                )
            try:
                self.request({"op": "ping"})
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the warm kernel server did not come up") from None
                time.sleep(0.1)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(60)
            conn.connect(self.socket_path)
            conn.sendall((json.dumps(message) + "\n").encode())
            return json.loads(conn.makefile("r").readline())

    def launch(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        return int(self.request({"op": "launch", "argv": argv, "env": env, "cwd": cwd})["pid"])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.request({"op": "stop"})
                self.process.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for leftover in (self.socket_path, self.folder):
            try:
                os.remove(leftover) if leftover == self.socket_path else os.rmdir(leftover)
            except OSError:
                pass


_servers: dict[tuple, WarmServer | None] = {}
_servers_lock = threading.Lock()


def server_for(modules: tuple[str, ...], env: dict[str, str], cwd: str) -> WarmServer | None:
    """The server for this key (started now if there is none); None if it cannot start (then kernels
    start fresh, and the reason is warned once)."""
    key = (modules, cwd, tuple(sorted((k, v) for k, v in env.items() if not k.startswith("JPY_"))))
    with _servers_lock:
        if key not in _servers:
            server_env = {k: v for k, v in env.items() if not k.startswith("JPY_")}
            try:
                _servers[key] = WarmServer(modules, server_env, cwd)
            except (OSError, RuntimeError) as e:
                warnings.warn(f"warm kernels unavailable ({e}); starting fresh kernels", stacklevel=2)
                _servers[key] = None
        return _servers[key]


def stop_servers(notebook: Path | None = None) -> None:
    """Stop the servers for this notebook's imports (every server without one)."""
    modules = None if notebook is None else notebook_imports(notebook)
    with _servers_lock:
        for key in [k for k in _servers if modules is None or k[0] == modules]:
            server = _servers.pop(key)
            if server is not None:
                server.stop()


atexit.register(stop_servers)


class _ForkedProcess:
    """What jupyter_client's LocalProvisioner needs of a Popen, for a kernel the server forked."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, server: WarmServer):
        self.pid = pid
        self.server = server
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                status = self.server.request({"op": "status", "pid": self.pid})
            except (OSError, ValueError):
                status = {"running": _alive(self.pid), "returncode": None}
            if not status["running"]:
                self.returncode = (
                    status["returncode"] if status["returncode"] is not None else -signal.SIGKILL
                )
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kernel_manager_class(notebook: Path) -> type:
    """An AsyncKernelManager class whose kernels are forked from the server for this notebook's imports
    (nbclient's ``kernel_manager_class``: one class per set of imports, no state shared between threads)."""
    return _manager_for(notebook_imports(notebook))


@functools.cache
def _manager_for(modules: tuple[str, ...]) -> type:
    return type("WarmKernelManager", (_warm_kernel_manager(),), {"modules": modules})


@functools.cache
def _warm_kernel_manager() -> type:
    """The manager and provisioner classes, built on first use: jupyter_client is imported only then."""
    import uuid

    from jupyter_client import AsyncKernelManager
    from jupyter_client.provisioning import LocalProvisioner

    class WarmProvisioner(LocalProvisioner):
        async def launch_kernel(self, cmd: list[str], **kwargs: Any):
            env = dict(kwargs.get("env") or os.environ)
            cwd = str(kwargs.get("cwd") or os.getcwd())
            if len(cmd) < 3 or cmd[0] != sys.executable or tuple(cmd[1:3]) != _LAUNCHER:
                return await super().launch_kernel(cmd, **kwargs)
            server = server_for(self.parent.modules, env, cwd)
            if server is None:
                return await super().launch_kernel(cmd, **kwargs)
            pid = server.launch(list(cmd[3:]), env, cwd)
            self.process = _ForkedProcess(pid, server)
            self.pid = self.pgid = pid  # the child leads a session (and process group) of its own
            self.cwd = cwd
            return self.connection_info

    class WarmKernelManager(AsyncKernelManager):
        modules: tuple[str, ...] = ()

        async def _async_pre_start_kernel(self, **kw: Any):
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            if self.provisioner is None:
                self.provisioner = WarmProvisioner(
                    kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
                )
            return await super()._async_pre_start_kernel(**kw)

    return WarmKernelManager


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
