"""Every TensorRT and CUDA-runtime name the project's code uses, read from its source with ast.

Why: TensorRT cannot run on the development machines, so the only proof that the builder and
the backend call real API names is to collect the names statically and look them up in the
real bindings (tests/test_tensorrt_api.py). Values are followed, not only the ``trt.`` spelling:
a small flow-insensitive analysis tracks what holds the ``tensorrt`` module, a TensorRT object,
cuda-python's runtime module or one of its results, through assignments, returns, calls into
project functions and classes, and ``self`` attributes, across modules; a parameter named
``trt``, ``tensorrt`` or ``cudart`` holds that module even when no caller is scanned.

Each use records the TensorRT majors that reach it, read from ``if`` tests comparing an
expression named ``*major*`` with a number (``if trt_major >= 11:``, ``major(...) < 11``),
including the rest of a block after ``if ...: return``. Names inside ``if hasattr(X, "N"):``
(and ``hasattr`` names themselves) are optional: guarded, they may be missing in a release.
``getattr(X, name)`` with a computed name is reported as ``dynamic`` for the test to resolve.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import operator
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

MAJORS = frozenset({10, 11})
APIS = {"tensorrt": "tensorrt", "cuda.bindings.runtime": "cudart", "cuda.cudart": "cudart"}
# Parameters named like the modules hold them, even when no caller is in the scanned code.
PARAMETERS = {"trt": {("mod", "tensorrt", ())}, "tensorrt": {("mod", "tensorrt", ())},
              "cudart": {("mod", "cudart", ())}}
SKIP_DIRS = {"build", "dist", "node_modules", "__pycache__"}
COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}

Label = tuple  # ("mod", api, path) | ("ret", api, path) | ("def"|"inst"|"bound", file, qualname)
Scope = tuple[str, str]  # (file, qualified name of the function; "" for the module)


@dataclass(frozen=True, order=True)
class Use:
    """One use of an API name; ``owner`` is the attribute path from the module when known."""

    api: str  # "tensorrt" | "cudart"
    kind: str  # attribute | keyword | call | result | dynamic
    name: str
    owner: tuple[str, ...] | None
    majors: frozenset[int]
    where: str  # "runtime/tensorrt_backend.py:140"
    text: str
    optional: bool = False
    nargs: int = -1  # calls: positional arguments (-1: unknown, e.g. *args)
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ctx:
    file: str
    scope: str
    cls: str | None
    majors: frozenset[int]
    guarded: frozenset[str] = frozenset()


def python_files(root: Path) -> list[Path]:
    """Every project source file: outside hidden, virtual-env and build folders."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                   and not (Path(folder) / d / "pyvenv.cfg").exists()]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found)


def version_split(test: ast.expr) -> tuple[frozenset[int], bool] | None:
    """(majors where ``test`` holds, whether it tests nothing else), or None: no version test."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in COMPARE:
        left, right, op = test.left, test.comparators[0], COMPARE[type(test.ops[0])]
        for number, other, flip in ((right, left, False), (left, right, True)):
            if isinstance(number, ast.Constant) and isinstance(number.value, int) \
                    and "major" in ast.unparse(other).lower():
                return frozenset(m for m in MAJORS if (op(number.value, m) if flip
                                                       else op(m, number.value))), True
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = version_split(test.operand)
        return (MAJORS - inner[0], True) if inner and inner[1] else None
    if isinstance(test, ast.BoolOp):
        parts = [version_split(value) for value in test.values]
        known = [p for p in parts if p]
        if not known:
            return None
        pure = len(known) == len(parts) and all(p[1] for p in known)
        if isinstance(test.op, ast.And):
            return frozenset.intersection(*(p[0] for p in known)), pure
        return (frozenset.union(*(p[0] for p in known)), True) if pure else None
    return None


def hasattr_names(test: ast.expr) -> frozenset[str]:
    """Names tested by ``hasattr(X, "N")`` inside an ``if`` test."""
    return frozenset(node.args[1].value for node in ast.walk(test)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                     and node.func.id == "hasattr" and len(node.args) == 2
                     and isinstance(node.args[1], ast.Constant))


def exits(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], ast.Return | ast.Raise)


@dataclass
class Analysis:
    """Fixpoint over every file: labels grow until stable, then one pass records the uses."""

    root: Path
    trees: dict[str, ast.Module]
    scopes: dict[Scope, dict[str, set]] = field(default_factory=lambda: defaultdict(dict))
    parents: dict[Scope, Scope | None] = field(default_factory=dict)
    functions: dict[Scope, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    methods: dict[Scope, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    returns: dict[Scope, set] = field(default_factory=lambda: defaultdict(set))
    attributes: dict[Scope, dict[str, set]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    uses: set[Use] = field(default_factory=set)
    resolved: dict[tuple[str, int, str], str | None] = field(default_factory=dict)
    recording: bool = False
    changed: bool = False

    def run(self) -> list[Use]:
        for _ in range(50):
            self.changed = False
            self.walk_all()
            if not self.changed:
                break
        self.recording = True
        self.walk_all()
        return sorted(self.uses)

    def walk_all(self) -> None:
        for file, tree in self.trees.items():
            self.parents.setdefault((file, ""), None)
            self.walk_block(tree.body, Ctx(file, "", None, MAJORS))

    # -- state -------------------------------------------------------------------------------

    def grow(self, target: set, labels: set) -> None:
        if not labels <= target:
            target |= labels
            self.changed = True

    def bind(self, ctx: Ctx, name: str, labels: set) -> None:
        self.grow(self.scopes[(ctx.file, ctx.scope)].setdefault(name, set()), labels)

    def lookup(self, ctx: Ctx, name: str) -> set:
        scope: Scope | None = (ctx.file, ctx.scope)
        while scope is not None:
            if name in self.scopes[scope]:
                return self.scopes[scope][name]
            scope = self.parents.get(scope)
        return set()

    def record(self, ctx: Ctx, node: ast.AST, api: str, kind: str, name: str,
               owner: tuple[str, ...] | None, **extra) -> None:
        if self.recording:
            self.uses.add(Use(api, kind, name, owner, ctx.majors,
                              f"{ctx.file}:{getattr(node, 'lineno', 0)}", ast.unparse(node),
                              optional=name in ctx.guarded, **extra))

    # -- statements --------------------------------------------------------------------------

    def walk_block(self, body: list[ast.stmt], ctx: Ctx) -> None:
        for stmt in body:
            after = self.walk_stmt(stmt, ctx)
            if after is not None:
                ctx = replace(ctx, majors=after)

    def walk_stmt(self, stmt: ast.stmt, ctx: Ctx) -> frozenset[int] | None:
        """Walk one statement; returns the majors left for the rest of the block if narrowed."""
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            self.define_function(stmt, ctx)
        elif isinstance(stmt, ast.ClassDef):
            qual = f"{ctx.scope}.{stmt.name}".lstrip(".")
            if ctx.cls is None:
                self.bind(ctx, stmt.name, {("def", ctx.file, qual)})
            self.walk_block(stmt.body, replace(ctx, cls=qual))
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            labels = self.eval(stmt.value, ctx) if stmt.value is not None else set()
            for target in targets:
                self.assign(target, stmt.value, labels, ctx)
        elif isinstance(stmt, ast.For | ast.AsyncFor):
            self.assign(stmt.target, None, self.eval(stmt.iter, ctx), ctx)
            self.walk_block(stmt.body, ctx)
            self.walk_block(stmt.orelse, ctx)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            for item in stmt.items:
                labels = self.eval(item.context_expr, ctx)
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, None, labels, ctx)
            self.walk_block(stmt.body, ctx)
        elif isinstance(stmt, ast.If):
            return self.walk_if(stmt, ctx)
        elif isinstance(stmt, ast.Return):
            if stmt.value is not None:
                self.grow(self.returns[(ctx.file, ctx.scope)], self.eval(stmt.value, ctx))
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            self.walk_import(stmt, ctx)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, *(h.body for h in stmt.handlers), stmt.orelse,
                          stmt.finalbody):
                self.walk_block(block, ctx)
        elif isinstance(stmt, ast.While):
            self.eval(stmt.test, ctx)
            self.walk_block(stmt.body, ctx)
            self.walk_block(stmt.orelse, ctx)
        else:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self.eval(child, ctx)
        return None

    def walk_if(self, stmt: ast.If, ctx: Ctx) -> frozenset[int] | None:
        self.eval(stmt.test, ctx)
        split = version_split(stmt.test)
        body = replace(ctx, guarded=ctx.guarded | hasattr_names(stmt.test))
        if split is None:
            self.walk_block(stmt.body, body)
            self.walk_block(stmt.orelse, ctx)
            return None
        holds, pure = split
        other = ctx.majors - holds if pure else ctx.majors
        self.walk_block(stmt.body, replace(body, majors=ctx.majors & holds))
        self.walk_block(stmt.orelse, replace(ctx, majors=other))
        return other if pure and not stmt.orelse and exits(stmt.body) else None

    def define_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, ctx: Ctx) -> None:
        qual = f"{ctx.cls or ctx.scope}.{node.name}".lstrip(".")
        key = (ctx.file, qual)
        self.functions[key] = node
        self.parents[key] = (ctx.file, ctx.scope)
        params = [a.arg for a in (*node.args.posonlyargs, *node.args.args,
                                  *node.args.kwonlyargs)]
        local = self.scopes[key]
        for name in params:
            self.grow(local.setdefault(name, set()), set(PARAMETERS.get(name, ())))
        is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod"
                        for d in node.decorator_list)
        if ctx.cls is not None:
            self.methods[(ctx.file, ctx.cls)][node.name] = qual
            if params and not is_static:
                self.grow(local[params[0]], {("inst", ctx.file, ctx.cls)})
        else:
            self.bind(ctx, node.name, {("def", ctx.file, qual)})
        for expr in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults):
            if expr is not None:
                self.eval(expr, ctx)
        self.walk_block(node.body, Ctx(ctx.file, qual, None, ctx.majors, ctx.guarded))

    def walk_import(self, stmt: ast.Import | ast.ImportFrom, ctx: Ctx) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name in APIS:
                    self.bind(ctx, alias.asname or alias.name.split(".")[0],
                              {("mod", APIS[alias.name], ())})
            return
        module = stmt.module or ""
        for alias in stmt.names:
            name, full = alias.asname or alias.name, f"{module}.{alias.name}"
            if full in APIS:
                self.bind(ctx, name, {("mod", APIS[full], ())})
            elif module in APIS:
                self.bind(ctx, name, {("mod", APIS[module], (alias.name,))})
            elif (file := self.module_file(module, stmt.level, ctx.file)) is not None:
                self.bind(ctx, name, {("def", file, alias.name)})

    def module_file(self, module: str, level: int, importer: str) -> str | None:
        """The project file (relative path) a ``from module import`` names, if scanned."""
        key = (module, level, importer if level else "")
        if key not in self.resolved:
            if level:
                base = (self.root / importer).parents[level - 1]
                self.resolved[key] = self.scanned(base.joinpath(*module.split(".")).with_suffix(
                    ".py") if module else None)
            elif self.scanned(importlib.util.find_spec(module.split(".")[0])) is None:
                self.resolved[key] = None  # not a project package: never import any of it
            else:  # imports the project's parent packages, which are light
                self.resolved[key] = self.scanned(importlib.util.find_spec(module))
        return self.resolved[key]

    def scanned(self, where: Path | importlib.machinery.ModuleSpec | None) -> str | None:
        """The relative path of a scanned file (a path or a module spec's origin), or None."""
        if isinstance(where, importlib.machinery.ModuleSpec):
            where = Path(where.origin) if where.origin else None
        if where is None or not where.is_file() or self.root not in where.resolve().parents:
            return None
        relative = where.resolve().relative_to(self.root).as_posix()
        return relative if relative in self.trees else None

    def assign(self, target: ast.expr, value: ast.expr | None, labels: set, ctx: Ctx) -> None:
        if isinstance(target, ast.Name):
            self.bind(ctx, target.id, labels)
        elif isinstance(target, ast.Tuple | ast.List):
            pairs = isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(
                target.elts) and not any(isinstance(e, ast.Starred) for e in target.elts)
            for i, element in enumerate(target.elts):
                part = value.elts[i] if pairs else None  # type: ignore[union-attr]
                self.assign(element, part, self.eval(part, ctx) if part else labels, ctx)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, None, labels, ctx)
        elif isinstance(target, ast.Attribute):
            self.eval(target, ctx)  # setting a TensorRT property is a use of its name
            for owner in self.eval(target.value, ctx):
                if owner[0] == "inst":
                    self.grow(self.attributes[owner[1:]][target.attr], labels)
        else:
            self.eval(target, ctx)

    # -- expressions -------------------------------------------------------------------------

    def eval(self, node: ast.expr | None, ctx: Ctx) -> set:
        """The labels ``node`` may evaluate to; records API uses on the way."""
        if node is None:
            return set()
        if isinstance(node, ast.Name):
            return set(self.lookup(ctx, node.id))
        if isinstance(node, ast.Attribute):
            return {out for label in self.eval(node.value, ctx)
                    for out in self.attribute(label, node.attr, node, ctx)}
        if isinstance(node, ast.Call):
            return self.call(node, ctx)
        if isinstance(node, ast.Subscript):
            self.eval(node.slice, ctx)
            return {label for label in self.eval(node.value, ctx) if label[0] == "ret"}
        if isinstance(node, ast.Starred | ast.Await):
            return self.eval(node.value, ctx)
        if isinstance(node, ast.IfExp):
            self.eval(node.test, ctx)
            return self.eval(node.body, ctx) | self.eval(node.orelse, ctx)
        if isinstance(node, ast.BoolOp | ast.Tuple | ast.List):
            items = node.values if isinstance(node, ast.BoolOp) else node.elts
            return set().union(*(self.eval(item, ctx) for item in items))
        if isinstance(node, ast.NamedExpr):
            labels = self.eval(node.value, ctx)
            self.assign(node.target, node.value, labels, ctx)
            return labels
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            for generator in node.generators:
                self.assign(generator.target, None, self.eval(generator.iter, ctx), ctx)
                for condition in generator.ifs:
                    self.eval(condition, ctx)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr) and not isinstance(child, ast.Name | ast.Constant):
                self.eval(child, ctx)
        return set()

    def attribute(self, label: Label, attr: str, node: ast.expr, ctx: Ctx) -> set:
        kind = label[0]
        if kind == "mod":
            self.record(ctx, node, label[1], "attribute", attr, label[2])
            return set() if attr.startswith("__") else {("mod", label[1], (*label[2], attr))}
        if kind == "ret":
            self.record(ctx, node, label[1], "result", attr, label[2])
            return {("ret", "tensorrt", None)} if label[1] == "tensorrt" else set()
        if kind == "inst":
            labels = set(self.attributes[label[1:]].get(attr, set()))
            method = self.methods[label[1:]].get(attr)
            return labels | ({("bound", label[1], method)} if method else set())
        return set()

    def call(self, node: ast.Call, ctx: Ctx) -> set:
        args = [self.eval(a, ctx) for a in node.args]
        keywords = {k.arg: self.eval(k.value, ctx) for k in node.keywords}
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(args) >= 2:
            name, out = node.args[1], set()
            for label in args[0]:
                if isinstance(name, ast.Constant):
                    guarded = {name.value} if func.id == "hasattr" else set()
                    out |= self.attribute(label, name.value, node,
                                          replace(ctx, guarded=ctx.guarded | guarded))
                elif label[0] in ("mod", "ret"):
                    self.record(ctx, node, label[1], "dynamic", "", label[2])
            return out if func.id == "getattr" else set()
        if node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in APIS \
                and ast.unparse(func).split(".")[-1] in ("importorskip", "import_module"):
            return {("mod", APIS[node.args[0].value], ())}
        out: set = set()
        nargs = -1 if any(isinstance(a, ast.Starred) for a in node.args) else len(node.args)
        for label in self.eval(func, ctx):
            if label[0] in ("mod", "ret") and (label[0] == "mod" or label[1] == "tensorrt"):
                api, path = label[1], label[2]
                if api == "cudart" and path:
                    self.record(ctx, node, api, "call", path[-1], path, nargs=nargs,
                                keywords=tuple(k for k in keywords if k))
                for keyword in keywords:
                    if keyword and api == "tensorrt":
                        self.record(ctx, node, api, "keyword", keyword, path)
                out.add(("ret", api, path if api == "cudart" else None))
            elif label[0] in ("def", "bound"):
                out |= self.call_project(label, args, keywords)
        return out

    def call_project(self, label: Label, args: list[set], keywords: dict) -> set:
        """Pass argument labels into a project function, method or class; its result."""
        kind, file, qual = label
        skip = kind == "bound"
        if (file, qual) not in self.functions:
            init = self.methods.get((file, qual), {}).get("__init__")
            if kind == "def" and init is None and (file, qual) not in self.methods:
                return set()  # not a known function or class (yet)
            if init is not None:
                self.pass_arguments((file, init), args, keywords, skip=True)
            return {("inst", file, qual)}
        self.pass_arguments((file, qual), args, keywords, skip=skip)
        return set(self.returns[(file, qual)])

    def pass_arguments(self, key: Scope, args: list[set], keywords: dict, skip: bool) -> None:
        node = self.functions[key]
        positional = [a.arg for a in (*node.args.posonlyargs, *node.args.args)][int(skip):]
        local = self.scopes[key]
        for name, labels in zip(positional, args, strict=False):
            self.grow(local.setdefault(name, set()), labels)
        for name, labels in keywords.items():
            if name in local:
                self.grow(local[name], labels)


def collect(root: Path, files: list[Path] | None = None) -> list[Use]:
    """Every TensorRT / cuda-python runtime use in ``files`` (default: the whole project)."""
    root = root.resolve()
    trees = {p.resolve().relative_to(root).as_posix(): ast.parse(p.read_text("utf-8"), str(p))
             for p in (files if files is not None else python_files(root))}
    return Analysis(root, trees).run()
