"""Misuse of the compiled core, case by case (run by tests/test_safety.py in a subprocess).

Each case calls the private core objects the wrong way -- in the wrong order, with wrong
shapes, dtypes, codes or NaN -- and must raise a Python exception rather than crash the
process. Run as a script, it prints one JSON line per case: its name, then the exception's
class (or "none" if nothing was raised); a crash shows up as a missing line and a bad exit
status.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np


def _load_core():
    """mixedfit._core alone, without importing the package (pandas, scipy ...): the cases
    need only the extension, and the subprocess then starts in a fraction of a second."""
    package = importlib.util.find_spec("mixedfit")
    for folder in package.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_core{suffix}"
            if path.exists():
                spec = importlib.util.spec_from_file_location("_core", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    raise ImportError("mixedfit._core not found")


_core = None  # loaded by main(): importing this file only lists the cases

N = 12


def fcol(a):
    return np.asfortranarray(np.asarray(a, dtype=float))


def lmm_inputs():
    rng = np.random.default_rng(3)
    X = fcol(np.column_stack([np.ones(N), rng.normal(size=N)]))
    g = np.ascontiguousarray(np.arange(N) % 3, dtype=np.int32)
    Z = fcol(np.ones((N, 1)))
    y = np.ascontiguousarray(rng.normal(size=N))
    return X, g, Z, y


def lmm(with_response=True):
    X, g, Z, y = lmm_inputs()
    p = _core.LmmProblem(X, [(g, 3, Z)])
    if with_response:
        p.set_response(y, None)
    return p


def lmm_with_nlopt(with_response=True):
    """lmm(), with NLopt's C API loaded into the core (what optimize.nlopt_in_core does), so
    that the in-core BOBYQA's own argument checks are reached."""
    import nlopt

    _core.load_nlopt(nlopt._nlopt.__file__, int(nlopt.LN_BOBYQA))
    return lmm(with_response)


def glmm_inputs(family=0, link=2):
    rng = np.random.default_rng(4)
    X, g, Z, _ = lmm_inputs()
    y = np.ascontiguousarray(rng.integers(0, 2, N).astype(float))
    if family == 1:
        y = np.ascontiguousarray(rng.poisson(2.0, N).astype(float))
    if family == 2:
        y = np.ascontiguousarray(rng.gamma(2.0, 1.0, N))
    pw = np.ones(N)
    return X, y, pw, None, [(g, 3, Z)], family, link


def glmm(family=0, link=2):
    return _core.GlmmProblem(*glmm_inputs(family, link))


def glmm_lmm_args_with(**changes):
    names = ["X", "y", "pw", "offset", "terms", "family", "link"]
    args = dict(zip(names, glmm_inputs()))
    args.update(changes)
    return [args[k] for k in names]


TH = np.array([1.0])
BETA = np.array([0.1, 0.2])
Z1, W1 = np.zeros(1), np.ones(1)


def term_with(**kw):
    X, g, Z, _ = lmm_inputs()
    t = dict(g=g, nlev=3, Z=Z)
    t.update(kw)
    return X, [(t["g"], t["nlev"], t["Z"])]


def mutated_codes_then(method):
    X, g, Z, y = lmm_inputs()
    p = _core.LmmProblem(X, [(g, 3, Z)])
    g[0] = 50
    return method(p, y)


def glmm_mutated_codes():
    args = glmm_inputs()
    p = _core.GlmmProblem(*args)
    args[4][0][0][0] = 1000
    return p.stage2(TH, BETA, None, 1, Z1, W1)


def spd(n):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(n, n))
    return A @ A.T + n * np.eye(n)


def cholesky_with_fault():
    _core._set_cholesky_fault_step(1)
    try:
        return _core.dense_cholesky(spd(300), 2, 32)
    finally:
        _core._set_cholesky_fault_step(-1)


def uninitialized(cls, method, *args):
    obj = cls.__new__(cls)
    return getattr(obj, method)(*args)


CASES = {
    # --- LmmProblem: call order ---
    "lmm objective before set_response": lambda: lmm(False).objective(TH, True),
    "lmm objective_grad before set_response": lambda: lmm(False).objective_grad(TH, True),
    "lmm solution before set_response": lambda: lmm(False).solution(TH),
    "lmm components before anything": lambda: lmm(False).components(),
    # --- LmmProblem: theta ---
    "lmm theta too long": lambda: lmm().objective(np.ones(3), True),
    "lmm theta empty": lambda: lmm().objective(np.ones(0), True),
    "lmm theta 2-D": lambda: lmm().objective(np.ones((1, 1)), True),
    "lmm theta NaN": lambda: lmm().objective(np.array([np.nan]), True),
    "lmm theta inf in solution": lambda: lmm().solution(np.array([np.inf])),
    "lmm theta text": lambda: lmm().objective(np.array(["a"]), True),
    "lmm theta None": lambda: lmm().objective(None, True),
    # --- LmmProblem: the in-core optimizers ---
    "lmm newton before set_response": lambda: lmm(False).newton(TH, True),
    "lmm newton x0 NaN": lambda: lmm().newton(np.array([np.nan]), True),
    "lmm newton x0 too long": lambda: lmm().newton(np.ones(2), True),
    "lmm bobyqa before set_response": lambda: lmm_with_nlopt(False).bobyqa(TH, np.zeros(1), True, 1e-8, 1e-8, 50),
    "lmm bobyqa lower too short": lambda: lmm_with_nlopt().bobyqa(TH, np.zeros(0), True, 1e-8, 1e-8, 50),
    "lmm bobyqa x0 2-D": lambda: lmm_with_nlopt().bobyqa(np.ones((1, 1)), np.zeros(1), True, 1e-8, 1e-8, 50),
    "lmm bobyqa maxeval 0": lambda: lmm_with_nlopt().bobyqa(TH, np.zeros(1), True, 1e-8, 1e-8, 0),
    "lmm bobyqa negative tolerance": lambda: lmm_with_nlopt().bobyqa(TH, np.zeros(1), True, -1.0, -1.0, 50),
    "fixed_qr more columns than rows": lambda: _core.fixed_qr(np.ones((2, 3), order="F"), None, 1e-7),
    "fixed_qr C-ordered": lambda: _core.fixed_qr(np.ones((5, 2)), None, 1e-7),
    "response_shift wrong y length": lambda: _core.response_shift(
        np.ones((4, 1), order="F"), np.ones((1, 1)), np.ones(3), None),
    # --- LmmProblem: construction ---
    "lmm X 1-D": lambda: _core.LmmProblem(np.ones(N), term_with()[1]),
    "lmm X int": lambda: _core.LmmProblem(np.ones((N, 2), dtype=int, order="F"), term_with()[1]),
    "lmm X C-ordered": lambda: _core.LmmProblem(np.ones((N, 2)), term_with()[1]),
    "lmm X big-endian": lambda: _core.LmmProblem(np.asfortranarray(np.ones((N, 2)), dtype=">f8"),
                                                 term_with()[1]),
    "lmm X NaN": lambda: _core.LmmProblem(fcol(np.full((N, 1), np.nan)), term_with()[1]),
    "lmm X no rows": lambda: _core.LmmProblem(fcol(np.ones((0, 1))),
                                              [(np.zeros(0, np.int32), 1, fcol(np.ones((0, 1))))]),
    "lmm no terms": lambda: _core.LmmProblem(term_with()[0], []),
    "lmm term not a tuple": lambda: _core.LmmProblem(term_with()[0], [[1, 2, 3]]),
    "lmm term of two": lambda: _core.LmmProblem(term_with()[0], [(term_with()[1][0][0], 3)]),
    "lmm codes int64": lambda: _core.LmmProblem(*term_with(g=np.arange(N) % 3)),
    "lmm codes negative": lambda: _core.LmmProblem(*term_with(g=np.full(N, -1, np.int32))),
    "lmm codes too large": lambda: _core.LmmProblem(*term_with(g=np.full(N, 3, np.int32))),
    "lmm codes short": lambda: _core.LmmProblem(*term_with(g=np.zeros(N - 1, np.int32))),
    "lmm nlevels zero": lambda: _core.LmmProblem(*term_with(nlev=0)),
    "lmm nlevels huge": lambda: _core.LmmProblem(*term_with(nlev=2**31 - 1)),
    "lmm nlevels text": lambda: _core.LmmProblem(*term_with(nlev="3")),
    "lmm Z 1-D": lambda: _core.LmmProblem(*term_with(Z=np.ones(N))),
    "lmm Z no columns": lambda: _core.LmmProblem(*term_with(Z=fcol(np.ones((N, 0))))),
    "lmm Z NaN": lambda: _core.LmmProblem(*term_with(Z=fcol(np.full((N, 1), np.nan)))),
    "lmm Z wrong rows": lambda: _core.LmmProblem(*term_with(Z=fcol(np.ones((N + 1, 1))))),
    # --- LmmProblem: response and predictor ---
    "lmm y short": lambda: lmm(False).set_response(np.ones(N - 1), None),
    "lmm y NaN": lambda: lmm(False).set_response(np.full(N, np.nan), None),
    "lmm y float32": lambda: lmm(False).set_response(np.ones(N, dtype=np.float32), None),
    "lmm weights negative": lambda: lmm(False).set_response(np.ones(N), -np.ones(N)),
    "lmm weights short": lambda: lmm(False).set_response(np.ones(N), np.ones(2)),
    "lmm linear_predictor beta short": lambda: lmm().linear_predictor(np.ones(1), np.ones(3)),
    "lmm linear_predictor b short": lambda: lmm().linear_predictor(np.ones(2), np.ones(1)),
    "lmm codes changed before set_response":
        lambda: mutated_codes_then(lambda p, y: p.set_response(y, None)),
    "lmm codes changed before linear_predictor":
        lambda: mutated_codes_then(lambda p, y: p.linear_predictor(np.ones(2), np.ones(3))),
    "lmm bad pickle state": lambda: _core.LmmProblem.__new__(_core.LmmProblem).__setstate__(()),
    "lmm uninitialized object": lambda: uninitialized(_core.LmmProblem, "objective", TH, True),
    "lmm uninitialized property": lambda: _core.LmmProblem.__new__(_core.LmmProblem).ntheta,
    "lmm setstate on a live object": lambda: (
        lambda p: (p.__setstate__(p.__getstate__()), p.objective(TH, True)))(lmm()),
    # --- GlmmProblem: call order ---
    "glmm state before evaluation": lambda: glmm().state(False),
    "glmm state(True) before evaluation": lambda: glmm().state(True),
    "glmm state_at before evaluation": lambda: glmm().state_at(TH),
    "glmm state_at at another theta": lambda: (
        lambda p: (p.stage2(TH, BETA, None, 1, Z1, W1), p.state_at(TH * 2)))(glmm()),
    "glmm stage1 warm before any": lambda: glmm().stage1(TH, None),
    "glmm stage1_grad before any": lambda: glmm().stage1_grad(TH),
    "glmm state after a failed evaluation": lambda: (
        lambda p: (_swallow(lambda: p.stage2(TH, np.array([np.nan, 0.0]), None, 1, Z1, W1)),
                   p.state(True)))(glmm()),
    # --- GlmmProblem: arguments ---
    "glmm theta short": lambda: glmm().stage2(np.ones(0), BETA, None, 1, Z1, W1),
    "glmm beta short": lambda: glmm().stage2(TH, np.ones(1), None, 1, Z1, W1),
    "glmm beta NaN": lambda: glmm().stage2(TH, np.array([np.nan, 0.0]), None, 1, Z1, W1),
    "glmm u_start short": lambda: glmm().stage2(TH, BETA, np.ones(1), 1, Z1, W1),
    "glmm eta_start short": lambda: glmm().stage1(TH, np.zeros(2)),
    "glmm eta_start NaN": lambda: glmm().stage1(TH, np.full(N, np.nan)),
    "glmm nodes missing": lambda: glmm().stage2(TH, BETA, None, 5, np.zeros(3), np.ones(3)),
    "glmm too many nodes": lambda: glmm().stage2(TH, BETA, None, 5000, np.zeros(5000),
                                                 np.ones(5000)),
    "glmm nodes NaN": lambda: glmm().stage2(TH, BETA, None, 2, np.array([np.nan, 1.0]),
                                            np.array([0.5, 0.5])),
    "glmm stage2_grad without a gradient": lambda: glmm(2, 1).stage2_grad(TH, BETA),
    "glmm newton stage 3": lambda: glmm().newton(3, TH),
    "glmm newton x0 short": lambda: glmm().newton(2, TH),
    "glmm newton x0 NaN": lambda: glmm().newton(2, np.r_[TH, np.nan, 0.0]),
    "glmm newton before any": lambda: glmm().newton(1, TH),
    "glmm newton without a gradient": lambda: glmm(2, 1).newton(2, np.r_[TH, BETA]),
    "glmm stage2_hessian delta 0": lambda: glmm().stage2_hessian(np.r_[TH, BETA], 0.0),
    "glmm stage2_hessian x short": lambda: glmm().stage2_hessian(TH),
    "glmm stage2_hessian x NaN": lambda: glmm().stage2_hessian(np.r_[TH, np.nan, 0.0]),
    "glmm pirls control NaN": lambda: glmm().set_pirls_control(float("nan"), 10),
    "glmm pirls control maxit 0": lambda: glmm().set_pirls_control(1e-8, 0),
    "glmm family code": lambda: _core.GlmmProblem(*glmm_lmm_args_with(family=9)),
    "glmm link code": lambda: _core.GlmmProblem(*glmm_lmm_args_with(link=-1)),
    "glmm y NaN": lambda: _core.GlmmProblem(*glmm_lmm_args_with(y=np.full(N, np.nan))),
    "glmm weights negative": lambda: _core.GlmmProblem(*glmm_lmm_args_with(pw=-np.ones(N))),
    "glmm offset NaN": lambda: _core.GlmmProblem(*glmm_lmm_args_with(offset=np.full(N, np.nan))),
    "glmm terms empty": lambda: _core.GlmmProblem(*glmm_lmm_args_with(terms=[])),
    "glmm term of two": lambda: _core.GlmmProblem(*glmm_lmm_args_with(
        terms=[(np.zeros(N, np.int32), 1)])),
    "glmm codes out of range": lambda: _core.GlmmProblem(*glmm_lmm_args_with(
        terms=[(np.full(N, 7, np.int32), 3, fcol(np.ones((N, 1))))])),
    "glmm codes changed after construction": glmm_mutated_codes,
    "glmm bad pickle state": lambda: _core.GlmmProblem.__new__(_core.GlmmProblem).__setstate__((1,)),
    "glmm uninitialized object": lambda: uninitialized(_core.GlmmProblem, "state", True),
    "glmm uninitialized property": lambda: _core.GlmmProblem.__new__(_core.GlmmProblem).has_gradient,
    # --- dense Cholesky and threads ---
    "cholesky not square": lambda: _core.dense_cholesky(np.ones((3, 2)), 1),
    "cholesky int": lambda: _core.dense_cholesky(np.eye(3, dtype=int), 1),
    "cholesky threads 0": lambda: _core.dense_cholesky(np.eye(3), 0),
    "cholesky block negative": lambda: _core.dense_cholesky(np.eye(3), 1, -1),
    "cholesky NaN": lambda: _core.dense_cholesky(np.full((500, 500), np.nan), 2, 64),
    "cholesky exception on a helper thread": cholesky_with_fault,
    "run_pair helper throws": lambda: _core._run_pair_throwing("helper"),
    "run_pair caller throws": lambda: _core._run_pair_throwing("caller"),
    "set_num_threads 0": lambda: _core.set_num_threads(0),
}


def _swallow(f):
    try:
        f()
    except Exception:  # noqa: BLE001 - the case is what follows the failure
        pass


def main() -> None:
    global _core
    _core = _load_core()
    for name, case in CASES.items():
        print(json.dumps({"start": name}), flush=True)
        try:
            case()
            outcome = "none"
        except Exception as exc:  # noqa: BLE001 - recording the class is the point
            outcome = type(exc).__name__
        print(json.dumps({"case": name, "raised": outcome}), flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
