"""float32 twins of the simulator's compiled modules: one definition of the model, two
precisions.

The equations (model.equations, model.late_sodium, model.artefacts) and kernels
(simulate.kernels) are written once, for float64. numba types every float literal and every
float module constant as float64, and float32 op float64 is float64, so passing float32 arrays
alone would not run in float32.
``float32_module(name)`` builds the float32 twin of such a module by rewriting its syntax tree:

- inside numba-compiled functions (decorated ``njit``), every float literal and ``np.nan`` /
  ``np.inf`` becomes a float32 module constant, and ``float(x)`` becomes ``np.float32(x)``;
- module-level float constants become float32 after the module ran, then the module's
  ``FLOAT32_CONSTANTS`` (a dict, if it defines one) overrides those whose float64 value does not
  suit float32 (e.g. overflow caps);
- imports of the other twinned modules point at their twins, ``cardiotwin.vecmath`` at
  ``cardiotwin.vecmath32`` (float32 exp/log/sqrt); top-level bare calls (a cache check) are
  dropped.

Integers mixed with floats (int64 op float32 is float64 in numba) must therefore not occur in
the twinned numerics: the kernels convert with ``float(...)``. ``tests/test_float32.py`` checks
that the compiled float32 kernel has no float64 arithmetic left.

The twin's source is written to ``cardiotwin/__pycache__/float32/`` (or a temporary directory
when the package is read-only) under a header holding the digest of every source it derives
from, and imported from there, so numba's on-disk cache works for it and is invalidated when
any of those sources change.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

from ..storage.identity import sha256_bytes

TWINNED = ("cardiotwin.model.late_sodium", "cardiotwin.model.equations",
           "cardiotwin.model.artefacts", "cardiotwin.simulate.kernels")
SUBSTITUTES = {"cardiotwin.vecmath": "cardiotwin.vecmath32"}
_TWIN_PREFIX = "cardiotwin_float32_twin_"
_ROOT = Path(__file__).resolve().parent.parent  # the cardiotwin package
_lock = threading.Lock()


def twin_name(module: str) -> str:
    """Module name of the float32 twin of ``module``."""
    return _TWIN_PREFIX + module.replace(".", "_")


def _source_path(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _digest() -> str:
    paths = [_source_path(m) for m in (*TWINNED, *SUBSTITUTES.values())] + [Path(__file__)]
    return sha256_bytes(b"".join(p.read_bytes() for p in paths))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of an import's module, seen from ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[:-node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _redirect(name: str) -> str:
    if name in TWINNED:
        return twin_name(name)
    return SUBSTITUTES.get(name, name)


def _is_jitted(fn: ast.FunctionDef) -> bool:
    return any("njit" in ast.unparse(d) for d in fn.decorator_list)


class _Float32Rewriter(ast.NodeTransformer):
    """Float literals, NaN/inf and float() inside jitted functions -> float32 (see module)."""

    def __init__(self) -> None:
        self.depth = 0
        self.constants: dict[str, str] = {}  # name -> expression of its float32 value

    def _constant(self, expr: str) -> ast.Name:
        name = self.constants.setdefault(expr, f"_F32_C{len(self.constants)}")
        return ast.Name(id=name, ctx=ast.Load())

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        jitted = _is_jitted(node)
        self.depth += jitted
        node.body = [self.visit(s) for s in node.body]
        self.depth -= jitted
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if self.depth and type(node.value) is float:
            return ast.copy_location(self._constant(repr(node.value)), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if (self.depth and isinstance(node.value, ast.Name) and node.value.id in ("np", "math")
                and node.attr in ("nan", "inf")):
            return ast.copy_location(self._constant(f"float({node.attr!r})"), node)
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if self.depth and isinstance(node.func, ast.Name) and node.func.id == "float":
            node.func = ast.copy_location(ast.Name(id="_F32", ctx=ast.Load()), node.func)
        return node


def _twin_source(module: str, digest: str) -> str:
    tree = ast.parse(_source_path(module).read_text(), filename=str(_source_path(module)))
    body: list[ast.stmt] = []
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
            target = _absolute(module, stmt)
            # from package import x, where x is itself a twinned module: import x's twin
            sub = [a for a in stmt.names if f"{target}.{a.name}" in TWINNED]
            body += [ast.Import(names=[ast.alias(_redirect(f"{target}.{a.name}"),
                                                 a.asname or a.name)]) for a in sub]
            rest = [a for a in stmt.names if a not in sub]
            if not rest:
                continue
            stmt = ast.ImportFrom(module=_redirect(target), names=rest, level=0)
        elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)) and i:
            continue  # a top-level call (the float64 kernels' cache check)
        body.append(stmt)
    tree.body = body
    rewriter = _Float32Rewriter()
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    footer = ["", "# ---- float32 (cardiotwin.simulate.precision)",
              "import numpy as _np_f32", "_F32 = _np_f32.float32",
              "_OVERRIDES = dict(globals().get('FLOAT32_CONSTANTS', {}))",
              "for _k, _v in list(globals().items()):",
              "    if isinstance(_v, (float, _np_f32.floating)):",
              "        globals()[_k] = _F32(_OVERRIDES.get(_k, _v))"]
    footer += [f"{name} = _F32({expr})" for expr, name in rewriter.constants.items()]
    header = (f"# float32 twin of {module}, generated by cardiotwin.simulate.precision from "
              f"sources {digest}; do not edit\n")
    return header + ast.unparse(tree) + "\n" + "\n".join(footer) + "\n"


def _twin_dir() -> Path:
    for d in (_ROOT / "__pycache__" / "float32",
              Path(tempfile.gettempdir()) / f"cardiotwin-float32-{os.getuid()}"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            return d
        except OSError:
            continue
    raise OSError("no writable directory for the float32 kernels (package __pycache__ or "
                  f"{tempfile.gettempdir()})")


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic, and untouched when equal (so numba's cache, keyed on the file, stays valid)."""
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def float32_module(module: str) -> ModuleType:
    """The float32 twin of ``module`` (one of TWINNED), generated and imported once per
    process (with the twins it imports)."""
    if module not in TWINNED:
        raise ValueError(f"no float32 twin of {module!r}: expected one of {', '.join(TWINNED)}")
    with _lock:
        name = twin_name(module)
        if name in sys.modules:
            return sys.modules[name]
        d = _twin_dir()
        digest = _digest()
        for m in TWINNED:  # in dependency order: a twin imports only earlier ones
            twin = twin_name(m)
            if twin in sys.modules:
                continue
            path = d / f"{twin}.py"
            _write_if_changed(path, _twin_source(m, digest))
            spec = importlib.util.spec_from_file_location(twin, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[twin] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[twin]
                raise
            if m == module:
                break
        return sys.modules[name]
