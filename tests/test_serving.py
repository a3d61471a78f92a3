"""Serving on a real Triton server: the ``tritonserver`` that the nvidia-pytriton wheel bundles,
started on 127.0.0.1 with free ports, through ``cflnet serve`` and through exported repositories.

Every server is stopped by its own process id in a finalizer; the checks compare the served
maps with ``Localizer.predict`` on the same bytes.
"""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo_array

if importlib.util.find_spec("pytriton") is None:
    pytest.skip("the Triton server comes with the nvidia-pytriton wheel: pip install "
                "'cflnet-sdk[serve]' (Linux, Python 3.10-3.13)", allow_module_level=True)
http = pytest.importorskip("tritonclient.http", reason="pip install tritonclient[http]")
grpc = pytest.importorskip("tritonclient.grpc", reason="pip install tritonclient[grpc]")
from tritonclient.utils import InferenceServerException  # noqa: E402

from cflnet_sdk import Localizer  # noqa: E402
from cflnet_sdk.default_model import require_default_model  # noqa: E402

STANDIN = '''
"""Stand-in for Triton's onnxruntime backend (not in the wheel): the same tensors, run by
ONNX Runtime inside the Python backend."""
from pathlib import Path

import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.session = onnxruntime.InferenceSession(
            str(Path(__file__).parent / "model.onnx"), providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            (probability,) = self.session.run(["probability"], {"image": image})
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("probability", probability)]))
        return responses
'''


def free_ports(count: int = 3) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def encoded(array: np.ndarray, fmt: str = "JPEG", **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (the server under the CLI, the stubs under it)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def request_image(client, payload: bytes, batched: bool = True):
    module = http if isinstance(client, http.InferenceServerClient) else grpc
    tensor = module.InferInput("image_bytes", [1, 1] if batched else [1], "BYTES")
    tensor.set_data_from_numpy(np.array([[payload]] if batched else [payload], dtype=object))
    return client.infer("cflnet", [tensor])


@pytest.fixture(scope="module")
def default_model() -> Path:
    return require_default_model()


@pytest.fixture(scope="module")
def localizer(default_model):
    return Localizer(default_model, device="cpu")


@pytest.fixture(scope="module")
def payloads() -> dict[str, bytes]:
    return {"jpeg": encoded(photo_array("astronaut")[:300, :420], quality=90),
            "png": encoded(photo_array("chelsea"), "PNG"),
            "gray": encoded(photo_array("camera")[:200, :333, 0], "PNG")}


class Served:
    """``cflnet serve`` running as a subprocess; ``stop`` sends SIGTERM to its own pid."""

    def __init__(self, model: Path, log: Path, *extra: str) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports()
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cflnet_sdk", "serve", str(model), "--address",
                 "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port",
                 str(self.grpc_port), "--metrics-port", str(self.metrics_port), *extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"cflnet serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.children = descendants(self.process.pid)

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/v2/models/cflnet/ready"
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def http(self):
        return http.InferenceServerClient(f"127.0.0.1:{self.http_port}", concurrency=1)

    def grpc(self):
        return grpc.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            for pid in descendants(self.process.pid):
                os.kill(pid, signal.SIGKILL)
            return self.process.wait()


@pytest.fixture(scope="module")
def served(default_model, tmp_path_factory):
    server = Served(default_model, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


def test_served_maps_equal_localizer(served, localizer, payloads):
    with served.http() as client_http:
        for payload in payloads.values():
            expected = localizer.predict(payload)
            for client in (client_http, served.grpc()):
                result = request_image(client, payload)
                probability = result.as_numpy("probability")[0]
                assert probability.shape == expected.probability.shape
                np.testing.assert_allclose(probability, expected.probability, rtol=0, atol=1e-5)
                assert result.as_numpy("score")[0, 0] == pytest.approx(expected.score, abs=1e-5)
                assert list(result.as_numpy("size")[0]) == list(expected.size)


def test_concurrent_clients_all_answered_as_sequential(served, payloads):
    photos = [encoded(photo_array(name)[:160, :224], quality=85)
              for name in ("astronaut", "coffee", "rocket", "chelsea")]
    with served.http() as client:
        sequential = [request_image(client, p).as_numpy("probability") for p in photos]

    def one_client(index: int) -> list[tuple[int, np.ndarray]]:
        with served.http() as client:
            return [((index + k) % 4, request_image(client, photos[(index + k) % 4])
                     .as_numpy("probability")) for k in range(25)]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(one_client, range(8)) for a in batch]
    assert len(answers) == 200
    for which, probability in answers:
        np.testing.assert_allclose(probability, sequential[which], rtol=0, atol=1e-6)


def test_bad_requests_get_clear_errors_and_server_keeps_serving(served, payloads, localizer):
    big = encoded(np.full((5774, 8660, 3), 128, np.uint8), quality=50)  # 50.0 megapixels
    jpeg = payloads["jpeg"]
    bad = {"corrupt": (jpeg[:len(jpeg) // 2], "truncated or corrupt"),
           "not an image": (b"this is no picture", "not an image file Pillow can read"),
           "empty": (b"", "image bytes are empty"),
           "50 MP": (big, "over this server's limit of 40")}
    with served.http() as client:
        for label, (payload, message) in bad.items():
            with pytest.raises(InferenceServerException, match=message) as error:
                request_image(client, payload)
            assert error.value.status() == "400", label
            assert request_image(client, payloads["png"]).as_numpy("score").shape == (1, 1)
        wrong_dtype = http.InferInput("image_bytes", [1, 1], "FP32")
        wrong_dtype.set_data_from_numpy(np.zeros((1, 1), np.float32))
        with pytest.raises(InferenceServerException, match=r"(?i)data-?type"):
            client.infer("cflnet", [wrong_dtype])
        two = http.InferInput("image_bytes", [1, 2], "BYTES")
        two.set_data_from_numpy(np.array([[payloads["png"], payloads["png"]]], dtype=object))
        with pytest.raises(InferenceServerException):
            client.infer("cflnet", [two])
        result = request_image(client, payloads["gray"])
        np.testing.assert_allclose(result.as_numpy("probability")[0],
                                   localizer.predict(payloads["gray"]).probability, atol=1e-5)


def test_sigterm_stops_cleanly(default_model, tmp_path, payloads):
    server = Served(default_model, tmp_path / "serve.log", "--answer", "mask")
    try:
        with server.http() as client:
            mask = request_image(client, payloads["png"]).as_numpy("mask_png")[0, 0]
        assert Image.open(io.BytesIO(mask)).mode == "1"
        assert server.children, "no tritonserver process under cflnet serve"
        segments = f"cflnet{server.process.pid}-"
        assert any(p.name.startswith(segments) for p in Path("/dev/shm").iterdir())
    finally:
        status = server.stop()
    assert status == 0, server.log.read_text()[-2000:]
    assert "stopped" in server.log.read_text()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in server.children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in server.children if alive(pid)]
    assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(segments)]


# -- exported repositories on the bundled server ----------------------------------------------
@pytest.fixture
def triton(tmp_path):
    """Start ``TritonServer`` instances on 127.0.0.1; each is stopped in the finalizer."""
    from cflnet_sdk.serving.server import ServerOptions, TritonServer

    started = []

    def start(repository: Path) -> TritonServer:
        ports = free_ports()
        options = ServerOptions("127.0.0.1", *ports, exit_timeout_s=3)
        work = tmp_path / f"work{len(started)}"
        work.mkdir()
        server = TritonServer(repository, work, options, log=work / "server.log")
        started.append(server)
        server.start(timeout_s=120)
        return server

    yield start
    for server in started:
        server.stop()
        assert not server.shared_memory()


def test_exported_python_repository_serves_masks(default_model, triton, tmp_path, payloads,
                                                 localizer):
    from typer.testing import CliRunner

    from cflnet_sdk.export.cli import app

    result = CliRunner().invoke(app, ["triton", str(default_model), "-o", str(tmp_path / "repo"),
                                      "--backend", "python", "--kind", "cpu", "--answer", "mask"])
    assert result.exit_code == 0, result.output
    server = triton(tmp_path / "repo")
    with http.InferenceServerClient(server.options.http_url) as client:
        for payload in payloads.values():
            png = request_image(client, payload).as_numpy("mask_png")[0, 0]
            mask = np.asarray(Image.open(io.BytesIO(png)))
            np.testing.assert_array_equal(mask, localizer.predict(payload).mask)


def test_checkpoint_served_by_torch(triton, tmp_path, payloads):
    pytest.importorskip("torch", reason="a .safetensors model runs on the torch backend")
    from cflnet_sdk.default_model import DEFAULT_MODEL
    from cflnet_sdk.serving.repository import write_python_repository

    checkpoint = DEFAULT_MODEL.with_suffix(".safetensors")
    write_python_repository(checkpoint, tmp_path / "repo")
    assert (tmp_path / "repo" / "cflnet" / "1" / "cflnet_sdk" / "training" / "model.py").is_file()
    server = triton(tmp_path / "repo")
    expected = Localizer(checkpoint, device="cpu").predict(payloads["jpeg"])
    with http.InferenceServerClient(server.options.http_url) as client:
        result = request_image(client, payloads["jpeg"])
    np.testing.assert_allclose(result.as_numpy("probability")[0], expected.probability,
                               rtol=0, atol=1e-5)


def test_bounded_queue_refuses_at_once_and_admin_endpoints_are_closed(default_model, triton,
                                                                     tmp_path, payloads):
    from cflnet_sdk.serving.repository import PythonModelOptions, write_python_repository

    write_python_repository(default_model, tmp_path / "repo",
                            PythonModelOptions(max_batch=1, max_queue=1))
    server = triton(tmp_path / "repo")

    def one(_: int) -> str:
        with http.InferenceServerClient(server.options.http_url) as client:
            try:
                request_image(client, payloads["png"])
                return "answered"
            except InferenceServerException as exc:
                return f"{exc.status()} {exc.message()}"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(one, range(12)))
    assert "answered" in outcomes
    assert set(outcomes) - {"answered"}, "12 requests at once never overflowed a queue of 1"
    assert all(o == "answered" or (o.startswith("503") and "Exceeds maximum queue size" in o)
               for o in outcomes), outcomes
    index = urllib.request.Request(f"http://{server.options.http_url}/v2/repository/index",
                                   data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(index, timeout=5)
    assert refused.value.code == 403


def standin_ensemble(model: Path, repository: Path, **options) -> None:
    """The ensemble as exported, its ONNX Runtime step run by the stand-in."""
    from cflnet_sdk.export.triton import TritonOptions
    from cflnet_sdk.export.triton_ensemble import write_ensemble_repository

    write_ensemble_repository(model, repository, TritonOptions(kind="cpu", max_batch=16),
                              **options)
    config = repository / "cflnet_model" / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "onnxruntime_onnx"',
                                                 'backend: "python"'))
    (repository / "cflnet_model" / "1" / "model.py").write_text(STANDIN)


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_ensemble_steps_answer_like_localizer(mode, triton, tmp_path, payloads, request,
                                              tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from tests.test_localizer import onnx_model

    # small models exported from PyTorch by conftest: 64x64 resize mode, 128x128 tiles
    model = (request.getfixturevalue("tile_onnx") if mode == "tile" else
             onnx_model(request.getfixturevalue("tiny_checkpoint"), tmp_path_factory))
    standin_ensemble(model, tmp_path / "repo")
    server = triton(tmp_path / "repo")
    reference = Localizer(model, device="cpu")
    assert reference.mode == mode
    photo = encoded(photo_array("coffee")[:333, :301], quality=88)
    with http.InferenceServerClient(server.options.http_url) as client:
        for payload in (payloads["jpeg"], photo):
            expected = reference.predict(payload)
            result = request_image(client, payload, batched=False)
            np.testing.assert_allclose(result.as_numpy("probability"), expected.probability,
                                       rtol=0, atol=1e-5)
            assert result.as_numpy("score")[0] == pytest.approx(expected.score, abs=1e-5)
        with pytest.raises(InferenceServerException, match="truncated or corrupt"):
            request_image(client, payloads["png"][:300], batched=False)


def test_ensemble_of_the_default_model_fuses_copy_move_like_localizer(triton, tmp_path):
    """The default verdict includes copy-move evidence: the ensemble analyses the bytes in its
    own step while the model runs, and its last step fuses as Localizer() does."""
    pytest.importorskip("onnxruntime")
    from tests.test_copymove import copy_move

    model = require_default_model()
    standin_ensemble(model, tmp_path / "repo")
    server = triton(tmp_path / "repo")
    forged, _, _ = copy_move(photo_array("coffee")[:300, :380], (90, 100), (280, 200), 40)
    payload = encoded(forged, "PNG")
    expected = Localizer(model, device="cpu").predict(payload)
    assert expected.copy_move is not None and expected.copy_move.score >= 0.5
    assert expected.score > expected.network_score  # the copy decides this verdict
    with http.InferenceServerClient(server.options.http_url) as client:
        result = request_image(client, payload, batched=False)
    np.testing.assert_allclose(result.as_numpy("probability"), expected.probability,
                               rtol=0, atol=1e-5)
    assert result.as_numpy("score")[0] == pytest.approx(expected.score, abs=1e-5)


def test_bundled_server_missing_is_a_clear_error(monkeypatch):
    from cflnet_sdk.errors import BackendUnavailableError
    from cflnet_sdk.serving import server

    monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError, match=r"cflnet-sdk\[serve"):
        server.bundled_triton()


def test_server_that_cannot_load_says_why(tmp_path, triton):
    from cflnet_sdk.serving.repository import write_python_repository
    from cflnet_sdk.serving.server import ServerError

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    write_python_repository(broken, tmp_path / "repo")
    with pytest.raises(ServerError, match=r"broken\.onnx"):
        triton(tmp_path / "repo")
