"""Every TensorRT and CUDA-runtime name the code uses exists in the real APIs (issue 12).

TensorRT cannot run here, so its code is checked by name: tests/api_uses.py collects every
TensorRT attribute, method, enum member and keyword the project uses, with the TensorRT majors
whose code path reaches it, and each is looked up in the PyPI bindings of the releases in
tests/trt_bindings.RELEASES (downloaded once into the user cache; the tests skip only when the
package index cannot be reached). A name missing from one major must sit under a version check
in the code (``if major >= 11:`` ...). cuda-python's runtime is a real wheel: its functions,
enums and members are looked up in the imported module, each call is bound to the function's
signature, and attributes of results are checked on the types its docstring says it returns.
"""

from __future__ import annotations

import builtins
import inspect
import re
from collections import defaultdict
from collections.abc import Callable
from itertools import product
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.api_uses import Use, collect, python_files
from tests.trt_bindings import RELEASES, Bindings, DownloadError, load

ROOT = Path(__file__).resolve().parents[1]
# The checker's own files handle the modules generically (getattr by computed name).
CHECKER = {Path(__file__).resolve().parent / name
           for name in (Path(__file__).name, "api_uses.py", "trt_bindings.py")}
RELEASE_PARAMS = [pytest.param(major, package, version, id=version)
                  for major, releases in RELEASES.items() for package, version in releases]


def builder_flags(major: int) -> set[str]:
    """Every ``BuilderFlag`` that ``typing_plan`` can hand ``configure`` on this major."""
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.export.tensorrt import BuildOptions, typing_plan

    flags: set[str] = set()
    for precision, fp16, int8, dla in product(("fp32", "fp16", "int8"), (False, True),
                                              (False, True), (None, 0)):
        try:
            options = BuildOptions(fp16=fp16, int8=int8, dla_core=dla)
            flags |= set(typing_plan(major, precision, options).flags)
        except ConfigError:
            pass
    return flags


# ``getattr(X, computed_name)`` in the code: the names it can take on a major, computed by
# running the code that produces them. A new such site fails test_every_dynamic_name_resolves.
DYNAMIC: dict[tuple[str, str], Callable[[int], set[str]]] = {
    ("export/tensorrt.py", "getattr(trt.BuilderFlag, flag)"): builder_flags,
}


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    return collect(ROOT, [p for p in python_files(ROOT) if p.resolve() not in CHECKER])


FETCHED: dict[tuple[str, str], Bindings | DownloadError] = {}


def bindings(package: str, version: str) -> Bindings:
    """The release's names; once the index proved unreachable, later ones skip at once."""
    offline = next((r for r in FETCHED.values()
                    if isinstance(r, DownloadError) and r.unreachable), None)
    if (package, version) not in FETCHED and offline is None:
        try:
            FETCHED[(package, version)] = load(package, version)
        except DownloadError as exc:
            FETCHED[(package, version)] = exc
    result = FETCHED.get((package, version), offline)
    if isinstance(result, DownloadError):
        if result.unreachable:
            pytest.skip(f"the package index cannot be reached, so the TensorRT bindings cannot "
                        f"be checked: {result}")
        raise result
    assert result is not None
    return result


def names_of(use: Use, major: int) -> set[str]:
    if use.kind == "dynamic":
        resolve = DYNAMIC.get((use.where.rsplit(":", 1)[0], use.text))
        return resolve(major) if resolve else set()
    return {use.name}


def missing_names(uses: list[Use], found: Bindings, major: int) -> list[str]:
    """One line per required TensorRT name that reaches ``major`` and is not in ``found``."""
    return [f"{use.where}: {use.text} -> {name!r} is not in {found.release}"
            + ("" if use.majors != {10, 11} else "; if only one major has it, put the use "
               "under a version check (if major >= 11: ...)")
            for use in uses if use.api == "tensorrt" and major in use.majors
            and not use.optional for name in sorted(names_of(use, major))
            if not found.has(name)]


def test_collector_sees_the_tensorrt_code(uses):
    files = {use.where.rsplit(":", 1)[0] for use in uses if use.api == "tensorrt"}
    assert {"export/tensorrt.py", "runtime/tensorrt_backend.py"} <= files, files
    cuda_files = {use.where.rsplit(":", 1)[0] for use in uses if use.api == "cudart"}
    assert "runtime/tensorrt_backend.py" in cuda_files, cuda_files
    typed = {use.majors for use in uses if use.text ==
             "trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED"}
    assert typed == {frozenset({10})}, "the TensorRT 10 branch of parse_network was not seen"


def test_collector_reads_version_branches_and_follows_values(tmp_path):
    (tmp_path / "snippet.py").write_text(
        "import tensorrt as trt\n\n"
        "class Holder:\n    def __init__(self, module):\n        self.module = module\n\n"
        "    def use(self):\n        return self.module.ViaSelf\n\n"
        "def build(major):\n    if major >= 11:\n        trt.Only11\n    else:\n"
        "        trt.Only10\n    if major < 11:\n        return trt.Early10\n"
        "    trt.After11\n    if hasattr(trt, 'Maybe'):\n        trt.Maybe.x(keyword=1)\n\n"
        "Holder(trt).use()\n")
    seen = {(u.name, tuple(sorted(u.majors)), u.optional, u.kind) for u in collect(tmp_path)}
    assert seen == {("ViaSelf", (10, 11), False, "attribute"), ("Only11", (11,), False,
                    "attribute"), ("Only10", (10,), False, "attribute"),
                    ("Early10", (10,), False, "attribute"), ("After11", (11,), False,
                    "attribute"), ("Maybe", (11,), True, "attribute"),
                    ("x", (11,), False, "attribute"), ("keyword", (11,), False, "keyword")}


def test_every_dynamic_name_resolves(uses):
    unresolved = [f"{u.where}: {u.text}" for u in uses if u.kind == "dynamic"
                  and (u.where.rsplit(":", 1)[0], u.text) not in DYNAMIC]
    assert not unresolved, ("getattr with a computed name on a TensorRT/CUDA object; add a "
                            f"resolver to DYNAMIC: {unresolved}")
    assert builder_flags(10) == {"FP16", "INT8"} and builder_flags(11) == set()


@pytest.mark.parametrize(("major", "package", "version"), RELEASE_PARAMS)
def test_tensorrt_names_exist_in_the_bindings(uses, major, package, version):
    problems = missing_names(uses, bindings(package, version), major)
    assert not problems, "\n".join(problems)


def test_guarded_tensorrt_names_exist_in_some_release(uses):
    """Names under ``hasattr`` may be missing in a release, but a misspelling is in none."""
    found = [bindings(p, v) for releases in RELEASES.values() for p, v in releases]
    problems = [f"{u.where}: {u.text}" for u in uses if u.api == "tensorrt" and u.optional
                and not any(b.has(u.name) for b in found)]
    assert not problems, problems


class Recorder:
    """Stands in for the tensorrt module and every object it hands out, as one release's
    bindings define them: a name they lack raises AttributeError, as the real module would;
    calls and assignments are recorded as (dotted path, argument texts)."""

    def __init__(self, found: Bindings, path: str, calls: list[tuple[str, tuple[str, ...]]]
                 ) -> None:
        vars(self).update(_found=found, _path=path, _calls=calls)

    def __getattr__(self, name: str) -> Recorder:
        if not self._found.has(name):
            raise AttributeError(f"{self._path}.{name} is not in {self._found.release}")
        return Recorder(self._found, f"{self._path}.{name}", self._calls)

    def __setattr__(self, name: str, value: Any) -> None:
        getattr(self, name)  # the property must exist
        self._calls.append((f"{self._path}.{name} =", (str(value),)))

    def __call__(self, *args: Any, **kwargs: Any) -> Recorder:
        self._calls.append((self._path, tuple(map(str, (*args, *kwargs.values())))))
        return Recorder(self._found, f"{self._path}()", self._calls)

    def __str__(self) -> str:
        return self._path


def configure_calls(found: Bindings, major: int, onnx_precision: str, **options: Any
                    ) -> list[tuple[str, tuple[str, ...]]]:
    """What ``configure`` asks of TensorRT for one build, on one release's names."""
    from cflnet_sdk.export.tensorrt import BuildOptions, configure, typing_plan

    calls: list[tuple[str, tuple[str, ...]]] = []
    build = BuildOptions(**options)
    shape = (1, 3, 64, 64)
    configure(Recorder(found, "trt", calls), Recorder(found, "builder", calls),
              Recorder(found, "config", calls), typing_plan(major, onnx_precision, build),
              (shape, shape, shape), build)
    return calls


@pytest.mark.parametrize(("major", "package", "version"), RELEASE_PARAMS)
def test_engines_clear_tf32_unless_asked(major, package, version):
    """TensorRT enables TF32 by default: an fp32 engine must clear it to compute in fp32."""
    found = bindings(package, version)
    tf32 = ("trt.BuilderFlag.TF32",)
    for precision in ("fp32", "fp16"):
        calls = configure_calls(found, major, precision)
        assert ("config.clear_flag", tf32) in calls and ("config.set_flag", tf32) not in calls
    asked = configure_calls(found, major, "fp32", tf32=True, version_compatible=True)
    assert ("config.set_flag", tf32) in asked and ("config.clear_flag", tf32) not in asked
    assert ("config.set_flag", ("trt.BuilderFlag.VERSION_COMPATIBLE",)) in asked
    with pytest.raises(AttributeError, match="TF23"):
        Recorder(found, "trt", []).BuilderFlag.TF23  # noqa: B018  (the stand-in refuses)


WRONG = {  # source, release, the names the checker must report
    "misspelt enum member": ("import tensorrt as trt\ntrt.BuilderFlag.FP61\n",
                             "11.4.0.106", {"FP61"}),
    "misspelt method on an object": (
        "def configure(trt):\n    config = trt.Builder(None).create_builder_config()\n"
        "    config.set_memory_pool_limt(trt.MemoryPoolType.WORKSPACE, 1)\n",
        "11.4.0.106", {"set_memory_pool_limt"}),
    "misspelt keyword": ("import tensorrt\nc = tensorrt.Builder(0).create_builder_config()\n"
                         "c.set_timing_cache(None, ignore_mismach=False)\n", "10.3.0",
                         {"ignore_mismach"}),
    "a prefix is no name": ("import tensorrt as trt\ntrt.Runtim\n", "10.3.0", {"Runtim"}),
    "removed in 11, only in its docstrings": (
        "import tensorrt as trt\ntrt.BuilderFlag.FP16\n", "11.4.0.106", {"FP16"}),
    "guarded by a version check": (
        "import tensorrt as trt\nmajor = int(trt.__version__.split('.')[0])\n"
        "if major < 11:\n    trt.BuilderFlag.FP16\n", "11.4.0.106", set()),
    "present on 10": ("import tensorrt as trt\ntrt.BuilderFlag.FP16, trt.BuilderFlag.INT8\n",
                      "10.3.0", set()),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_checker_reports_wrong_names_against_the_real_bindings(case, tmp_path):
    source, version, expected = WRONG[case]
    (tmp_path / "snippet.py").write_text(source)
    major = int(version.split(".")[0])
    package = next(p for p, v in RELEASES[major] if v == version)
    problems = missing_names(collect(tmp_path), bindings(package, version), major)
    reported = {re.search(r"-> '(\w+)'", line).group(1) for line in problems}  # type: ignore[union-attr]
    assert reported == expected, problems


# -- cuda-python's runtime -------------------------------------------------------------------

def cudart() -> ModuleType:
    return pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings is not installed "
                               "(pip install -e '.[dev]')")


def resolve(module: ModuleType, path: tuple[str, ...]) -> Any:
    value: Any = module
    for name in path:
        value = getattr(value, name)
    return value


def return_types(module: ModuleType, function: Any) -> list[type] | None:
    """Types in the ``Returns`` section of a cuda-python docstring; None if one is unknown."""
    doc = function.__doc__ or ""
    if "Returns\n-------\n" not in doc:
        return None
    section = doc.split("Returns\n-------\n", 1)[1].split("\n\n", 1)[0]
    types: list[type] = []
    for line in section.splitlines():
        if line and not line[0].isspace():
            spec = re.sub(r":py:obj:`~?\.?([\w.]+)`", r"\1", line.split(" : ", 1)[-1]).strip()
            try:
                value = resolve(module, tuple(spec.split(".")))
            except AttributeError:
                value = getattr(builtins, spec, None)
            if value is None:
                return None  # e.g. "Any": not introspectable
            types.append(value if isinstance(value, type) else type(value))
    return types


def cuda_problems(uses: list[Use], module: ModuleType) -> list[str]:
    """Missing names, calls that do not fit the signature, attributes no result type has."""
    problems: list[str] = []
    results: dict[tuple[str, str, str], list[Use]] = defaultdict(list)
    for use in (u for u in uses if u.api == "cudart"):
        where = f"{use.where}: {use.text}"
        if use.kind == "attribute":
            try:
                resolve(module, (*(use.owner or ()), use.name))
            except AttributeError:
                problems.append(f"{where} -> {use.name!r} is not in {module.__name__}")
        elif use.kind == "call" and use.nargs >= 0 and hasattr(module, use.name):
            try:
                inspect.signature(getattr(module, use.name)).bind(
                    *range(use.nargs), **dict.fromkeys(use.keywords))
            except TypeError as exc:
                problems.append(f"{where} does not fit {use.name}"
                                f"{inspect.signature(getattr(module, use.name))}: {exc}")
        elif use.kind == "result":
            results[(use.where, use.text, use.name)].append(use)
    for (where, text, name), group in results.items():
        # A value may come from several calls (a helper's result is not told apart by
        # caller): the attribute must exist on a type one of them can return.
        candidates = [return_types(module, resolve(module, u.owner or ())) for u in group]
        if all(c is not None for c in candidates) and not any(
                hasattr(t, name) for c in candidates for t in c or ()):
            owners = sorted(".".join(u.owner or ()) for u in group)
            problems.append(f"{where}: {text} -> no result of {owners} has {name!r}")
    return problems


def test_cuda_runtime_calls_exist_with_the_signatures_used(uses):
    module = cudart()
    assert any(u.api == "cudart" and u.kind == "call" for u in uses)
    problems = cuda_problems(uses, module)
    assert not problems, "\n".join(problems)


def test_cuda_checker_reports_wrong_uses(tmp_path):
    module = cudart()
    (tmp_path / "snippet.py").write_text(
        "from cuda.bindings import runtime as cudart\n"
        "cudart.cudaMemcpyAsnc(1, 2, 3, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, 0)\n"
        "cudart.cudaMalloc(1, 2)\n"
        "err, props = cudart.cudaGetDeviceProperties(0)\n"
        "props.nmae, props.major, cudart.cudaMemcpyKind.cudaMemcpyHostToDevise\n")
    problems = cuda_problems(collect(tmp_path), module)
    assert len(problems) == 4, problems
    for needle in ("cudaMemcpyAsnc", "cudaMalloc(size)", "'nmae'", "cudaMemcpyHostToDevise"):
        assert any(needle in line for line in problems), (needle, problems)
