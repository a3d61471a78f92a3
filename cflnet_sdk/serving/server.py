"""Run the ``tritonserver`` that the ``nvidia-pytriton`` wheel bundles on a model repository.

The wheel holds Triton 2.51 with its Python backend, but not laid out to run as is; what it
needs was found the hard way:

- the Python backend stub for this interpreter's version is copied into ``backends/python``;
- the wheel's ``nvidia_pytriton.libs`` goes on ``LD_LIBRARY_PATH`` (without it the server hangs
  in "loading" and ignores SIGINT);
- this interpreter's ``bin`` goes first on ``PATH``: the stub runs the first ``python3`` there,
  whose environment must hold numpy, Pillow and the model's runtime;
- where this Python is not the system's (pyenv, a venv of it), its own ``lib`` goes first on
  ``LD_LIBRARY_PATH``, or the stub loads the system's libpython of the same version and fails
  (``'_thread.RLock' object has no attribute '_recursion_count'``).

The server gets its own process group, so Ctrl-C in a terminal reaches only ``cflnet serve``,
which stops the server in order; ``stop`` ends the group by the server's own process id.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cflnet_sdk.errors import BackendUnavailableError, CFLNetError

# Admin endpoints a client must not reach without the key (as PyTriton does): registering
# shared memory reads other processes' segments; repository control loads arbitrary models.
RESTRICTED = "shared-memory,model-repository,logging,trace"
ADMIN_HEADER = "cflnet-admin-key"


class ServerError(CFLNetError):
    """The Triton server could not start, or stopped on its own."""


@dataclass(frozen=True)
class ServerOptions:
    """Where the server listens. Triton's usual ports; 0.0.0.0 means every interface."""

    address: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout_s: int = 10  # how long a stop waits for requests in flight
    verbose: bool = False

    @property
    def client_host(self) -> str:
        """The address a client on this machine uses to reach the server."""
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else \
            "[::1]" if self.address == "::" else self.address

    @property
    def http_url(self) -> str:
        return f"{self.client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.grpc_port}"


def bundled_triton() -> tuple[Path, Path]:
    """(the wheel's ``tritonserver`` folder, its ``nvidia_pytriton.libs``), or a clear error."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise BackendUnavailableError("serving needs the Triton server of the nvidia-pytriton "
                                      "wheel: pip install 'cflnet-sdk[serve,cpu]' (Linux x86-64 "
                                      "or arm64, Python 3.10-3.13)")
    root = Path(spec.origin).parent / "tritonserver"
    libs = Path(spec.origin).parent.parent / "nvidia_pytriton.libs"
    if not (root / "bin" / "tritonserver").is_file() or not libs.is_dir():
        raise BackendUnavailableError("this nvidia-pytriton install has no bundled tritonserver "
                                      "(an editable or source install?); reinstall the wheel: "
                                      "pip install --force-reinstall nvidia-pytriton", root)
    return root, libs


def server_environment(libs: Path) -> dict[str, str]:
    """The environment the server and its Python stubs need (see the module docstring)."""
    env = dict(os.environ)
    library_path = [str(libs)]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        library_path.insert(0, str(sysconfig.get_config_var("LIBDIR")))
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def prepare_backends(root: Path, workdir: Path) -> Path:
    """A backends folder with the Python backend and the stub for this interpreter."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailableError(f"the nvidia-pytriton wheel has no Python backend stub "
                                      f"for Python {version}; use Python 3.10-3.13", stub)
    backends = workdir / "backends"
    shutil.copytree(root / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return backends


class TritonServer:
    """One ``tritonserver`` process on ``repository``; use as a context manager or call
    ``start``/``stop``. ``workdir`` holds its backends folder; ``log`` its output (None: this
    process's terminal)."""

    def __init__(self, repository: str | Path, workdir: str | Path,
                 options: ServerOptions | None = None, log: Path | None = None) -> None:
        self.repository = Path(repository)
        self.workdir = Path(workdir)
        self.options = options or ServerOptions()
        self.log = log
        self.shm_prefix = f"cflnet{os.getpid()}-{secrets.token_hex(4)}-"
        self.admin_key = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def command(self, backends: Path, binary: Path) -> list[str]:
        o = self.options
        restricted = f"{RESTRICTED}:{ADMIN_HEADER}={self.admin_key}"
        return [str(binary), f"--model-repository={self.repository}",
                f"--backend-directory={backends}",
                f"--http-address={o.address}", f"--http-port={o.http_port}",
                f"--grpc-address={o.address}", f"--grpc-port={o.grpc_port}",
                f"--metrics-address={o.address}", f"--metrics-port={o.metrics_port}",
                f"--exit-timeout-secs={o.exit_timeout_s}",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}",
                f"--log-verbose={1 if o.verbose else 0}", "--allow-gpu-metrics=false"]

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the server and wait until it and every model are ready."""
        root, libs = bundled_triton()
        backends = prepare_backends(root, self.workdir)
        if self.log is not None:
            self._log_file = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command(backends, root / "bin" / "tritonserver"), env=server_environment(libs),
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT
            if self._log_file else None, start_new_session=True)
        self.wait_ready(timeout_s)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def ready(self) -> bool:
        url = f"http://{self.options.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with status {self.process.returncode} "
                                  f"before it was ready; {self.log_hint()}", self.repository)
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s; "
                          f"{self.log_hint()}", self.repository)

    def log_hint(self) -> str:
        if self.log is None:
            return "its messages are above"
        lines = self.log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if line.startswith("E")] or lines[-5:]
        return "its log says:\n" + "\n".join(errors[-8:])

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop the server (SIGINT: it finishes requests in flight and unloads its models,
        which ends their stubs and frees their shared memory); if it has not exited in time,
        kill its process group, stubs included. Returns its exit status."""
        process, self.process = self.process, None
        status = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                status = process.wait(timeout_s if timeout_s is not None
                                      else self.options.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:  # not reaped yet: the group id is still its own
                os.killpg(process.pid, signal.SIGKILL)
                status = process.wait()
            self.remove_shared_memory()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return status

    def shared_memory(self) -> list[Path]:
        """This server's shared-memory segments (their names carry its unique prefix)."""
        return sorted(Path("/dev/shm").glob(f"{self.shm_prefix}*"))

    def remove_shared_memory(self) -> None:
        """A server whose exit timeout ran out (clients holding connections open use it up)
        exits without unloading its models and leaves their segments behind."""
        for segment in self.shared_memory():
            segment.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
