"""Entropic optimal transport between point clouds, with OTT-JAX's names and moscot's sparsify.

``PointCloud`` is the geometry (two clouds, a ground cost, its scale and epsilon), ``sinkhorn``
solves it and returns a ``SinkhornOutput`` with OTT-JAX's fields (``f``, ``g``, ``errors``,
``converged``, ``reg_ot_cost``, ``apply``, ``marginal``, ``matrix``) and moscot's ``sparsify``.
``sparsify`` on its own turns potentials computed by another solver (OTT-JAX, moscot) into a
sparse plan in bounded memory. The dense ``n x m`` cost and plan are never built unless asked
for (``transport_matrix``). See docs/python-ot.md.

Example:
    >>> import numpy as np, otcal
    >>> rng = np.random.default_rng(0)
    >>> geom = otcal.PointCloud(rng.normal(size=(100, 3)), rng.normal(size=(80, 3)), epsilon=0.1)
    >>> out = otcal.sinkhorn(geom, threshold=1e-6)
    >>> bool(out.converged), out.f.shape, out.g.shape
    (True, (100,), (80,))
    >>> plan = out.sparsify(mode="min_row")          # scipy.sparse.csr_array, shape (100, 80)
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
import warnings
from typing import Any, Callable, Iterator, Literal, Optional, Union

import numpy as np

from . import _otcal
from ._arrays import as_matrix, as_vector, framework_of, is_device_array, to_framework
from ._context import get_context, library_call as _library_call
from ._progress import ProgressReporter
from .errors import BudgetTooSmall, InvalidArgument, OtcalError, OtcalWarning

__all__ = ["PointCloud", "SinkhornOutput", "sinkhorn", "sparsify", "Momentum", "AndersonAcceleration",
           "initial_potentials"]

ScaleCost = Union[float, Literal["mean", "max_cost", "max_norm", "max_bound", "median"]]
SparsifyMode = Literal["threshold", "percentile", "min_row", "mass"]

_SCALE_NAMES = ("mean", "max_cost", "max_norm", "max_bound", "median")
_SPARSIFY_MODES = ("threshold", "percentile", "min_row", "mass")
# OTT-JAX cost objects, recognised by class name so that OTT need not be imported.
_OTT_COSTS = {"SqEuclidean": "sqeuclidean", "Euclidean": "euclidean", "Cosine": "cosine", "PNormP": "pnorm",
              "SqPNorm": "sq_pnorm"}
_COSINE_RIDGE = 1e-8  # the library's, and OTT-JAX's default


# ---------------------------------------------------------------------------------------------
# Argument checks: every message names the argument and says what to do.

def _cost_name(cost_fn: Any) -> str:
    if isinstance(cost_fn, str):
        try:
            return _otcal.cost_name(cost_fn)
        except InvalidArgument as exc:
            raise InvalidArgument(f"cost_fn: {exc}") from None
    kind = _OTT_COSTS.get(type(cost_fn).__name__)
    if kind is None:
        raise InvalidArgument(
            f"cost_fn: {cost_fn!r} is not a cost otcal offers; use 'sqeuclidean', 'euclidean', 'cosine', "
            "'pnorm:P', 'sq_pnorm:P' or the matching ott.geometry.costs object"
        )
    if kind == "cosine":
        ridge = float(getattr(cost_fn, "_ridge", _COSINE_RIDGE))
        if ridge != _COSINE_RIDGE:
            raise InvalidArgument(f"cost_fn: Cosine(ridge={ridge!r}) is not offered; otcal's cosine uses ridge 1e-8")
    if kind in ("pnorm", "sq_pnorm"):
        p = float(cost_fn.p)
        try:
            return _otcal.cost_name(f"{kind}:{p!r}")
        except InvalidArgument as exc:
            raise InvalidArgument(f"cost_fn: {exc}") from None
    return kind


def _scale_spec(scale_cost: Any, cost: str) -> Union[float, str]:
    if isinstance(scale_cost, str):
        if scale_cost not in _SCALE_NAMES:
            raise InvalidArgument(
                f"scale_cost: {scale_cost!r} is not a number or one of {', '.join(_SCALE_NAMES)}"
            )
        if scale_cost in ("max_norm", "max_bound") and cost != "sqeuclidean":
            raise InvalidArgument(
                f"scale_cost: {scale_cost!r} is defined for the sqeuclidean cost only (cost_fn is {cost!r}); "
                "use 'mean', 'max_cost', 'median' or a number"
            )
        return scale_cost
    value = _real(scale_cost, "scale_cost")
    if not (value > 0 and math.isfinite(value)):
        raise InvalidArgument(f"scale_cost: {scale_cost!r} must be a finite number > 0, or one of {', '.join(_SCALE_NAMES)}")
    return value


def _real(value: Any, name: str) -> float:
    if isinstance(value, (bool, str)) or value is None:
        raise InvalidArgument(f"{name}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: expected a number, got {type(value).__name__}") from None


def _int(value: Any, name: str, minimum: Optional[int] = None) -> int:
    """An integer; without `minimum` the library checks the range (with moscot's messages)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and int(value) < minimum:
        raise InvalidArgument(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _optional_int(value: Any, name: str, minimum: Optional[int] = None) -> Optional[int]:
    return None if value is None else _int(value, name, minimum)


def _epsilon(epsilon: Any, name: str = "epsilon") -> Optional[float]:
    if epsilon is None:
        return None
    value = _real(epsilon, name)
    if not (value > 0 and math.isfinite(value)):
        raise InvalidArgument(f"{name}: {epsilon!r} must be a finite number > 0")
    return value


def _dtype_name(a: Any) -> str:
    return "float32" if str(getattr(a, "dtype", "")).endswith("float32") else "float64"


def _precision(precision: Any, default: str) -> str:
    if precision is None:
        return default
    name = precision
    if not isinstance(precision, str):
        try:
            name = np.dtype(precision).name
        except TypeError:
            name = None
    if name in ("float32", "float64"):
        return name
    raise InvalidArgument(f"precision: expected None, 'float32' or 'float64', got {precision!r}")


def _sparsify_mode(mode: Any) -> str:
    if not isinstance(mode, str) or mode not in _SPARSIFY_MODES:
        raise InvalidArgument(f"mode: unknown sparsify mode {mode!r}; use one of {', '.join(_SPARSIFY_MODES)}")
    return mode


def _percentile_method(method: Any) -> str:
    if not isinstance(method, str) or method not in ("sampled", "exact"):
        raise InvalidArgument(f"percentile_method: expected 'sampled' or 'exact', got {method!r}")
    return method


def _axis(axis: Any) -> int:
    if isinstance(axis, bool) or axis not in (0, 1):
        raise InvalidArgument(f"axis: expected 0 or 1, got {axis!r}")
    return int(axis)


def _to_host(a: Any) -> Any:
    """A host (numpy-readable) version of ``a``: device arrays are copied to the host."""
    if not is_device_array(a):
        return a
    fw = framework_of(a)
    if fw == "cupy":
        return a.get()
    if fw == "torch":
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _wait_for_producer(a: Any) -> None:
    """Let the framework finish writing a CUDA array before the library reads it on its own stream."""
    if a is None or not is_device_array(a):
        return
    fw = framework_of(a)
    if fw == "torch":
        import torch

        torch.cuda.current_stream(a.device).synchronize()
    elif fw == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif fw == "jax":
        a.block_until_ready()


def _csr(parts: dict) -> Any:
    import scipy.sparse

    return scipy.sparse.csr_array((parts["data"], parts["indices"], parts["indptr"]), shape=parts["shape"])


def _report(parts: dict) -> dict:
    return {k: v for k, v in parts.items() if k not in ("data", "indices", "indptr")}


def _embedding(adata: Any, obsm_key: Optional[str], name: str) -> Any:
    if obsm_key is None:
        where, matrix = f"{name}.X", adata.X
    else:
        if obsm_key not in adata.obsm:
            raise InvalidArgument(
                f"obsm_key: {obsm_key!r} is not in {name}.obsm (available: {', '.join(map(repr, adata.obsm.keys()))})"
            )
        where, matrix = f"{name}.obsm[{obsm_key!r}]", adata.obsm[obsm_key]
    if matrix is None:
        raise InvalidArgument(f"{name}: {where} is empty; pass obsm_key= naming an embedding such as 'X_pca'")
    if hasattr(matrix, "nnz") or type(matrix).__module__.startswith("scipy.sparse"):
        raise InvalidArgument(
            f"{name}: {where} is a sparse matrix; transport between cells runs on a dense embedding. Compute one "
            "(e.g. scanpy.pp.pca) and pass obsm_key='X_pca'"
        )
    if hasattr(matrix, "to_numpy"):  # a DataFrame in obsm
        matrix = matrix.to_numpy()
    return as_matrix(matrix, where)


# ---------------------------------------------------------------------------------------------
# Geometry


class PointCloud:
    """Two point clouds, the ground cost between them, its scale and the entropic epsilon.

    The ``n x m`` cost matrix is never built: every operation recomputes costs tile by tile from
    the clouds, in a memory budget. Names and semantics follow OTT-JAX's
    ``ott.geometry.pointcloud.PointCloud`` (docs/sinkhorn.md lists the few deviations).

    Args:
        x: source points ``[n, d]``: numpy (or anything ``numpy.asarray`` reads) on the host, or a
            CUDA array of CuPy, PyTorch or JAX (used in place through DLPack). C-contiguous
            float32/float64 numpy arrays are used without a copy; other dtypes and layouts are copied
            once (to float64, or kept float32).
        y: target points ``[m, d]``; None means ``y = x``.
        cost_fn: ``"sqeuclidean"`` (``sum (x - y)^2``), ``"euclidean"``, ``"cosine"``
            (``1 - <x, y> / (|x| |y| + 1e-8)``), ``"pnorm:P"`` (``sum |x - y|^p / p``),
            ``"sq_pnorm:P"`` (``0.5 |x - y|_p^2``), moscot's spellings (``"sq_euclidean"``,
            ``"pnorm_1.5"``), or an OTT-JAX cost object (``ott.geometry.costs.SqEuclidean()``,
            ``Euclidean()``, ``Cosine()``, ``PNormP(p)``, ``SqPNorm(p)``).
        scale_cost: the cost used is ``C = c / s``. A number ``s``, or ``"mean"`` (mean of all
            ``n m`` costs), ``"max_cost"``, ``"median"`` (exact), ``"max_norm"`` and
            ``"max_bound"`` (sqeuclidean only). Resolved once per solve and stored in the output.
        epsilon: entropic regularisation of the scaled cost. None: ``0.05 * std(C)`` (OTT-JAX).
        relative_epsilon: None, ``"mean"`` or ``"std"``: epsilon is then a factor (default 0.05)
            of the mean or standard deviation of ``C``.
        batch_size: rows per tile; None plans it from the memory budget. No result depends on it.

    The inputs are checked (shapes, finite coordinates) when they are first uploaded to a
    context, that is, by the first call that uses the geometry. The upload is kept: a PointCloud
    holds one resident copy per context and precision (``release()`` frees them), so repeated
    solves, ``apply``, ``marginal`` and ``sparsify`` calls upload nothing again.

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(1)
        >>> x, y = rng.normal(size=(50, 2)), rng.normal(size=(60, 2)) + 1.0
        >>> geom = otcal.PointCloud(x, y, cost_fn="euclidean", scale_cost="mean", epsilon=0.05)
        >>> geom.shape
        (50, 60)
    """

    obs_names_x: Any
    obs_names_y: Any

    def __init__(
        self,
        x: Any,
        y: Any = None,
        cost_fn: Any = "sqeuclidean",
        scale_cost: ScaleCost = 1.0,
        epsilon: Optional[float] = None,
        relative_epsilon: Optional[Literal["mean", "std"]] = None,
        batch_size: Optional[int] = None,
    ):
        x = as_matrix(x, "x")
        if y is not None:
            y = as_matrix(y, "y")
            if y.shape[1] != x.shape[1]:
                raise InvalidArgument(
                    f"y: has {y.shape[1]} columns but x has {x.shape[1]}: both clouds must live in the same dimension"
                )
            if _dtype_name(x) != _dtype_name(y):
                if is_device_array(x) or is_device_array(y):
                    raise InvalidArgument(
                        f"y: is {_dtype_name(y)} but x is {_dtype_name(x)}; give both clouds the same dtype"
                    )
                # Mixed host dtypes: both in float64 (the float32 one is copied).
                x, y = as_matrix(x, "x", np.float64), as_matrix(y, "y", np.float64)
        self.x = x
        self.y = y
        self.cost_fn: str = _cost_name(cost_fn)
        self.scale_cost: Union[float, str] = _scale_spec(scale_cost, self.cost_fn)
        self.epsilon: Optional[float] = _epsilon(epsilon)
        if relative_epsilon not in (None, "mean", "std"):
            raise InvalidArgument(f"relative_epsilon: expected None, 'mean' or 'std', got {relative_epsilon!r}")
        self.relative_epsilon: Optional[str] = relative_epsilon
        self.batch_size: Optional[int] = _optional_int(batch_size, "batch_size", 1)
        self.obs_names_x = None
        self.obs_names_y = None
        self._problems: dict[tuple[int, str], tuple[Any, Any]] = {}

    @classmethod
    def from_anndata(cls, adata_x: Any, adata_y: Any = None, obsm_key: Optional[str] = None, **kw: Any) -> "PointCloud":
        """A PointCloud between the cells of two AnnData objects (moscot's usual input).

        Args:
            adata_x: source cells; row ``i`` of every plan is ``adata_x.obs_names[i]``.
            adata_y: target cells (None: ``adata_x`` against itself); column ``j`` of every plan is
                ``adata_y.obs_names[j]``.
            obsm_key: the embedding to use, e.g. ``"X_pca"``; None uses ``.X``, which must be dense
                (a sparse ``.X`` of counts is refused: compute a PCA embedding first).
            **kw: the other ``PointCloud`` arguments (``cost_fn``, ``scale_cost``, ``epsilon``, ...).

        ``geom.obs_names_x`` and ``geom.obs_names_y`` keep the two ``obs_names`` so plans can be
        labelled, e.g. ``pandas.DataFrame(out.transport_matrix(), index=geom.obs_names_x,
        columns=geom.obs_names_y)``.

        Example:
            >>> import anndata, numpy as np, otcal
            >>> rng = np.random.default_rng(2)
            >>> early = anndata.AnnData(obsm={"X_pca": rng.normal(size=(40, 5))})
            >>> late = anndata.AnnData(obsm={"X_pca": rng.normal(size=(30, 5))})
            >>> geom = otcal.PointCloud.from_anndata(early, late, obsm_key="X_pca", scale_cost="mean")
            >>> geom.shape, len(geom.obs_names_y)
            ((40, 30), 30)
        """
        x = _embedding(adata_x, obsm_key, "adata_x")
        y = None if adata_y is None else _embedding(adata_y, obsm_key, "adata_y")
        geom = cls(x, y, **kw)
        geom.obs_names_x = adata_x.obs_names.copy()
        geom.obs_names_y = (adata_x if adata_y is None else adata_y).obs_names.copy()
        return geom

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``: the shape of the cost matrix and of every plan."""
        return int(self.x.shape[0]), int((self.x if self.y is None else self.y).shape[0])

    @property
    def dtype(self) -> str:
        """``"float32"`` or ``"float64"``: the default precision of solves on this geometry."""
        return _dtype_name(self.x)

    @property
    def is_online(self) -> bool:
        """Always True: costs are recomputed tile by tile, never stored (OTT-JAX's name)."""
        return True

    def release(self) -> None:
        """Frees the resident copies of the clouds (outputs that still use one keep it alive)."""
        self._problems.clear()

    def _problem(self, ctx: Any, precision: str) -> Any:
        """The resident problem for this context and precision, uploaded on first use."""
        key = (id(ctx), precision)
        hit = self._problems.get(key)
        if hit is not None:
            return hit[1]
        _wait_for_producer(self.x)
        _wait_for_producer(self.y)
        problem = _otcal.Problem(ctx, self.x, self.y, self.cost_fn, self.scale_cost, precision)
        self._problems[key] = (ctx, problem)  # ctx kept alive: id() stays unique while cached
        return problem

    def _forget(self, ctx: Any, precision: str, problem: Any) -> None:
        hit = self._problems.get((id(ctx), precision))
        if hit is not None and hit[1] is problem:
            del self._problems[(id(ctx), precision)]

    def __repr__(self) -> str:
        n, m = self.shape
        return (f"PointCloud(n={n}, m={m}, d={self.x.shape[1]}, cost_fn={self.cost_fn!r}, "
                f"scale_cost={self.scale_cost!r}, epsilon={self.epsilon!r}, relative_epsilon={self.relative_epsilon!r}, "
                f"batch_size={self.batch_size!r}, dtype={self.dtype!r})")


# ---------------------------------------------------------------------------------------------
# Sinkhorn


class SinkhornOutput:
    """The result of ``sinkhorn``: potentials, run report, and the operations on the implicit plan.

    The plan is ``P_ij = exp((f_i + g_j - C_ij) / epsilon)`` with ``C = c / scale`` (the scale and
    epsilon resolved by the solve). It is never stored: ``apply``, ``marginal``, ``sparsify`` and
    ``transport_matrix`` recompute it tile by tile on the geometry's resident clouds.

    Attributes:
        f, g: potentials ``[n]``, ``[m]`` in the solve's precision, on the framework and device of
            ``geom.x`` (numpy for host inputs).
        a, b: the weights solved with (uniform when not given), float64.
        errors: marginal error per block of ``inner_iterations`` run (``n_iters /
            inner_iterations`` entries; OTT-JAX's ``-1`` padding for blocks not run is left out),
            ``inf`` = not computed (before ``min_iterations``).
        converged, diverged, n_iters: as OTT-JAX (docs/sinkhorn.md §5).
        reg_ot_cost: OTT-JAX's ``reg_ot_cost`` (``compute_kl_reg_cost``).
        epsilon, scale: the resolved target epsilon (of the scaled cost) and the scale ``s``.
        geom: the PointCloud; tau_a, tau_b, threshold, inner_iterations: the options solved with.
        batch_size: tile rows used. memory: ``budget_bytes``, ``peak_bytes`` (measured),
            ``planned_peak_bytes``, ``resident_bytes``, ``tile_rows``, ``n_tiles``.
        device, elapsed_s, precision: where, how long, and in which precision it ran.

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(3)
        >>> out = otcal.sinkhorn(otcal.PointCloud(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)), epsilon=0.5))
        >>> bool(np.allclose(out.marginal(1), out.a, atol=1e-2))   # P 1 = a up to the threshold
        True
    """

    def __init__(self, geom: PointCloud, problem: Any, potentials: Any, report: dict, context: Any):
        self.geom = geom
        self._problem = problem
        self._potentials = potentials
        self._context = context
        like = geom.x
        self.f = to_framework(report["f"], like)
        self.g = to_framework(report["g"], like)
        self.a = report["a"]
        self.b = report["b"]
        self.errors: np.ndarray = report["errors"]
        self.converged: bool = bool(report["converged"])
        self.diverged: bool = bool(report["diverged"])
        self.n_iters: int = int(report["n_iters"])
        self.reg_ot_cost: float = float(report["reg_ot_cost"])
        self.epsilon: float = float(report["epsilon"])
        self.scale: float = float(report["scale"])
        self.threshold: float = float(report["threshold"])
        self.inner_iterations: int = int(report["inner_iterations"])
        self.tau_a: float = float(report["tau_a"])
        self.tau_b: float = float(report["tau_b"])
        self.batch_size: int = int(report["batch_size"])
        self.memory: dict = dict(report["memory"])
        self.device: str = report["device"]
        self.elapsed_s: float = float(report["elapsed_s"])
        self.precision: str = problem.precision

    @property
    def potentials(self) -> tuple[Any, Any]:
        """``(f, g)``."""
        return self.f, self.g

    @property
    def context(self) -> Any:
        """The otcal.Context the solve ran in (and later operations run in)."""
        return self._context

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self.geom.shape

    def apply(self, inputs: Any, axis: int = 0, batch_size: Optional[int] = None) -> Any:
        """Applies the plan to vectors, as OTT-JAX's ``SinkhornOutput.apply``.

        Args:
            inputs: ``axis=0``: one vector ``[n]`` or a batch ``[k, n]`` (one per row); returns
                ``P^T v``, shape ``[m]`` or ``[k, m]`` (moscot's ``push``). ``axis=1``: ``[m]`` or
                ``[k, m]``; returns ``P v``, ``[n]`` or ``[k, n]`` (moscot's ``pull``). Signed values are
                allowed. Device arrays are read through the host (``O(k (n + m))``), and the result
                comes back on their framework and device.
            axis: 0 or 1, as above.
            batch_size: tile rows (default: the geometry's; None plans it from the budget).

        Example:
            >>> import numpy as np, otcal
            >>> rng = np.random.default_rng(4)
            >>> out = otcal.sinkhorn(otcal.PointCloud(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)), epsilon=0.5))
            >>> out.apply(np.ones(30), axis=0).shape, out.apply(np.ones((4, 20)), axis=1).shape
            ((20,), (4, 30))
        """
        axis = _axis(axis)
        n, m = self.shape
        expected = n if axis == 0 else m
        values = _to_host(inputs)
        if values is None:
            raise InvalidArgument("inputs: expected an array of numbers, got None")
        arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if arr.ndim == 1:
            matrix = as_vector(arr, "inputs", length=expected).reshape(-1, 1)
        elif arr.ndim == 2:
            if arr.shape[1] != expected:
                raise InvalidArgument(
                    f"inputs: expected shape [k, {expected}] for axis={axis} (one entry per "
                    f"{'x' if axis == 0 else 'y'} point), got {arr.shape}"
                )
            matrix = as_matrix(arr.T, "inputs")  # [expected, k], the library's column layout (one copy)
        else:
            raise InvalidArgument(f"inputs: expected a 1-D or 2-D array, got shape {arr.shape}")
        bs = _optional_int(batch_size, "batch_size", 1) if batch_size is not None else self.geom.batch_size
        with _library_call(self._context):
            out = self._problem.apply(self._potentials, matrix, axis, bs)
        result = out[:, 0] if arr.ndim == 1 else np.ascontiguousarray(out.T)
        return to_framework(result, inputs)

    def marginal(self, axis: int, batch_size: Optional[int] = None) -> Any:
        """A marginal of the plan, as OTT-JAX's ``SinkhornOutput.marginal``.

        ``axis=0`` sums over the rows: ``P^T 1``, length ``m`` (compare with ``b``); ``axis=1``
        sums over the columns: ``P 1``, length ``n`` (compare with ``a``).

        Example:
            >>> import numpy as np, otcal
            >>> rng = np.random.default_rng(5)
            >>> out = otcal.sinkhorn(otcal.PointCloud(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)), epsilon=0.5),
            ...                      threshold=1e-9)
            >>> bool(np.allclose(out.marginal(0), out.b))
            True
        """
        axis = _axis(axis)
        bs = _optional_int(batch_size, "batch_size", 1) if batch_size is not None else self.geom.batch_size
        with _library_call(self._context):
            out = self._problem.marginal(self._potentials, axis, bs)
        return to_framework(out, self.geom.x)

    @property
    def transport_mass(self) -> float:
        """``sum_ij P_ij`` (1 for a converged balanced problem with unit masses)."""
        return float(np.sum(_to_host(self.marginal(1)), dtype=np.float64))

    def sparsify(
        self,
        mode: SparsifyMode = "threshold",
        value: Optional[float] = None,
        max_k: Optional[int] = None,
        batch_size: Optional[int] = None,
        n_samples: Optional[int] = None,
        seed: int = 0,
        percentile_method: Literal["sampled", "exact"] = "sampled",
        return_report: bool = False,
    ) -> Any:
        """The plan as a ``scipy.sparse.csr_array``, built block by block (moscot's ``sparsify``).

        Args:
            mode: ``"threshold"``: keep ``P_ij >= value``. ``"percentile"``: the threshold is the
                ``value``-th percentile (0-100) of the entries of ``n_samples`` sampled rows (or of
                all entries with ``percentile_method="exact"``). ``"min_row"``: the threshold is the
                smallest row maximum, so every row with mass keeps its largest entry (``value``
                unused). ``"mass"``: per row, the largest entries holding a fraction ``value`` in
                ``(0, 1]`` of the row's mass, at most ``max_k`` of them.
            value: the mode's parameter, as above.
            max_k: ``mass`` only: most entries kept per row.
            batch_size: rows per block (None: planned from the budget). The output never depends on it.
            n_samples: sampled ``percentile``: rows drawn (default 1024). seed: their seed.
            percentile_method: ``"sampled"`` (moscot's) or ``"exact"`` (all entries, exact).
            return_report: also return a dict with ``threshold`` (the one used), ``n_massless_rows``,
                ``batch_size``, ``memory`` and ``elapsed_s``.

        The output holds float32 values when the solve was float32, columns ascending in each row,
        no explicit zeros. Rows of the plan are recomputed from the potentials; at most one block
        of ``batch_size x m`` plan values exists at any time (docs/sparsify.md).

        Example:
            >>> import numpy as np, otcal
            >>> rng = np.random.default_rng(6)
            >>> out = otcal.sinkhorn(otcal.PointCloud(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)), epsilon=0.1))
            >>> T = out.sparsify(mode="mass", value=0.9, max_k=5)
            >>> T.shape, int(np.diff(T.indptr).max()) <= 5
            ((30, 20), True)
        """
        mode = _sparsify_mode(mode)
        with _library_call(self._context):
            parts = self._problem.sparsify(
                self._potentials, mode, None if value is None else _real(value, "value"),
                _optional_int(max_k, "max_k"), _optional_int(batch_size, "batch_size"),
                _optional_int(n_samples, "n_samples"), _int(seed, "seed", 0),
                _percentile_method(percentile_method),
            )
        csr = _csr(parts)
        return (csr, _report(parts)) if return_report else csr

    def transport_matrix(self, batch_size: Optional[int] = None) -> Any:
        """The dense ``[n, m]`` plan, in the solve's precision, on the framework of ``geom.x``.

        Made by the library's sparsifier (a threshold-0 pass that writes each finished block into
        the output), never from a dense cost. The ``n m`` values count against the context's
        memory budget together with the resident clouds and one block: when they do not fit,
        ``otcal.BudgetTooSmall`` is raised before anything is allocated, and its
        ``required_bytes`` is a ``memory_budget`` with which the call succeeds. Use ``sparsify``
        for large problems.

        Example:
            >>> import numpy as np, otcal
            >>> rng = np.random.default_rng(7)
            >>> out = otcal.sinkhorn(otcal.PointCloud(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)), epsilon=0.5),
            ...                      threshold=1e-9)
            >>> P = out.transport_matrix()
            >>> P.shape, bool(np.allclose(P.sum(axis=1), out.a))
            ((30, 20), True)
        """
        bs = _optional_int(batch_size, "batch_size", 1)
        with _library_call(self._context):
            dense = self._problem.dense_plan(self._potentials, bs)
        return to_framework(dense, self.geom.x)

    @property
    def matrix(self) -> Any:
        """OTT-JAX's name for ``transport_matrix()`` (dense; refused beyond the memory budget)."""
        return self.transport_matrix()

    def __repr__(self) -> str:
        n, m = self.shape
        return (f"SinkhornOutput(n={n}, m={m}, converged={self.converged}, n_iters={self.n_iters}, "
                f"reg_ot_cost={self.reg_ot_cost:.6g}, epsilon={self.epsilon:.6g}, scale={self.scale:.6g}, "
                f"precision={self.precision!r}, device={self.device!r})")


def sinkhorn(
    geom: PointCloud,
    a: Any = None,
    b: Any = None,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    threshold: float = 1e-3,
    norm_error: float = 1.0,
    inner_iterations: int = 10,
    min_iterations: int = 0,
    max_iterations: int = 2000,
    epsilon_init: float = 1.0,
    epsilon_decay: float = 1.0,
    parallel_dual_updates: bool = False,
    on_divergence: Literal["error", "return"] = "error",
    precision: Optional[str] = None,
    device: str = "auto",
    memory_budget: Union[int, str, None] = None,
    context: Any = None,
    progress: Union[bool, Callable[[dict], Any], None] = None,
    momentum: Any = None,
    anderson: Any = None,
    initializer: Any = "default",
) -> SinkhornOutput:
    """Solves entropic optimal transport on ``geom`` with OTT-JAX's log-domain Sinkhorn.

    Minimises ``<C, P> - eps H(P) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)`` with
    ``rho = eps tau / (1 - tau)`` (a hard constraint where ``tau = 1``), exactly as
    ``ott.solvers.linear.sinkhorn.Sinkhorn()(LinearProblem(geom, a, b, tau_a, tau_b))``.

    Args:
        geom: an ``otcal.PointCloud``.
        a, b: non-negative weights ``[n]``, ``[m]`` (None: uniform). Host or CUDA arrays.
        tau_a, tau_b: in ``(0, 1]``; below 1 the marginal is soft (unbalanced transport).
        threshold: stop when the marginal error falls below it. norm_error: the error's p-norm.
        inner_iterations: iterations per block; the error is evaluated (and progress reported,
            Ctrl-C noticed) once per block. min_iterations, max_iterations: as OTT-JAX.
        epsilon_init, epsilon_decay: OTT-JAX's scheduler,
            ``eps_t = max(epsilon_init * epsilon_decay**t, 1) * eps`` (default: none).
        parallel_dual_updates: Jacobi instead of Gauss-Seidel updates.
        on_divergence: ``"error"`` raises ``otcal.NumericalError``; ``"return"`` returns the
            output with ``diverged=True`` (OTT-JAX's behaviour).
        precision: ``"float32"`` or ``"float64"``; None: float32 when ``geom.x`` is float32, else
            float64. f and g come back in it.
        device: ``"auto"`` (a CUDA device when one works, else the CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``. memory_budget: bytes (or ``"512MiB"``) the workspaces must fit; None: a
            quarter of the device's memory. context: an ``otcal.Context`` instead of both.
        progress: None (a tqdm bar in a terminal or notebook), False (nothing), True (always), or a
            callable receiving ``{"iteration": int, "error": float}`` once per block.
        momentum: None, an ``otcal.Momentum`` or OTT-JAX's ``Momentum`` (read by attribute), or a
            number (a fixed weight). anderson: None, an ``otcal.AndersonAcceleration`` or OTT-JAX's;
            when set, momentum is ignored (as OTT-JAX does). initializer: ``"default"`` (zeros),
            ``"gaussian"`` (sqeuclidean cost only), or OTT-JAX's DefaultInitializer /
            GaussianInitializer objects. See docs/sinkhorn.md §7-8.

    Ctrl-C stops the solve within one block (``KeyboardInterrupt``); the geometry stays usable.
    Non-convergence is an ``otcal.OtcalWarning``, not an error.

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(8)
        >>> geom = otcal.PointCloud(rng.normal(size=(60, 3)), rng.normal(size=(40, 3)), scale_cost="mean", epsilon=0.05)
        >>> out = otcal.sinkhorn(geom, tau_a=0.9, threshold=1e-6, progress=False)
        >>> bool(out.converged), out.f.dtype
        (True, dtype('float64'))
    """
    if not isinstance(geom, PointCloud):
        raise InvalidArgument(
            f"geom: expected an otcal.PointCloud, got {type(geom).__name__}; build one with otcal.PointCloud(x, y)"
        )
    n, m = geom.shape
    ctx = get_context(device, memory_budget, context=context)
    prec = _precision(precision, geom.dtype)
    a_arr = None if a is None else as_vector(a, "a", length=n)
    b_arr = None if b is None else as_vector(b, "b", length=m)
    _wait_for_producer(a_arr)
    _wait_for_producer(b_arr)
    if on_divergence not in ("error", "return"):
        raise InvalidArgument(f"on_divergence: expected 'error' or 'return', got {on_divergence!r}")
    options = dict(
        epsilon=geom.epsilon,
        relative_epsilon=geom.relative_epsilon or "",
        epsilon_init=_real(epsilon_init, "epsilon_init"),
        epsilon_decay=_real(epsilon_decay, "epsilon_decay"),
        tau_a=_real(tau_a, "tau_a"),
        tau_b=_real(tau_b, "tau_b"),
        threshold=_real(threshold, "threshold"),
        norm_error=_real(norm_error, "norm_error"),
        inner_iterations=_int(inner_iterations, "inner_iterations", 1),
        min_iterations=_int(min_iterations, "min_iterations", 0),
        max_iterations=_int(max_iterations, "max_iterations", 1),
        parallel_dual_updates=bool(parallel_dual_updates),
        on_divergence=on_divergence,
        batch_size=geom.batch_size,
        initializer=_initializer_name(initializer),
        **_momentum_args(momentum),
        **_anderson_args(anderson),
    )
    with ProgressReporter(progress, total=options["max_iterations"], desc="sinkhorn", unit="it") as reporter:
        hook = None
        if reporter.active:
            def hook(iteration: int, error: float) -> None:
                reporter.update(iteration, {"iteration": iteration, "error": error})

        with _library_call(ctx):
            fresh = (id(ctx), prec) not in geom._problems
            try:
                problem = geom._problem(ctx, prec)
            except BudgetTooSmall:
                # The clouds alone do not fit. Let the library plan the whole call (upload and solve)
                # so that required_bytes is a budget with which this call succeeds.
                _otcal.sinkhorn_once(ctx, geom.x, geom.y, geom.cost_fn, geom.scale_cost, prec, a_arr, b_arr,
                                     progress=None, **options)
                raise
            try:
                potentials, report = problem.sinkhorn(a_arr, b_arr, progress=hook, **options)
            except BudgetTooSmall:
                if fresh:  # do not keep clouds uploaded for a call that could not run
                    geom._forget(ctx, prec, problem)
                raise
    return SinkhornOutput(geom, problem, potentials, report, ctx)


# ---------------------------------------------------------------------------------------------
# Acceleration and initializers (docs/python-ot.md): otcal's small classes mirror OTT-JAX's
# constructors; OTT's own objects are read by attribute or class name, so OTT need not be imported.


class Momentum:
    """OTT-JAX's ``Momentum``: over-relaxed updates ``(1 - w) old + w new``.

    ``start=0``: the fixed weight ``value`` in ``(0, 2)``. ``start > 0``: ``value`` until iteration
    ``start``, then Lehmann et al.'s adaptive weight from the decrease of the errors of the two
    blocks before ``start`` (if the last is below ``error_threshold``). ``inner_iterations`` is
    accepted for OTT's signature and, as in OTT's Sinkhorn, replaced by the solver's.

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(3)
        >>> geom = otcal.PointCloud(rng.normal(size=(50, 2)), rng.normal(size=(40, 2)), scale_cost="mean",
        ...                         epsilon=5e-3)
        >>> plain = otcal.sinkhorn(geom, threshold=1e-5, max_iterations=20_000, progress=False)
        >>> fast = otcal.sinkhorn(geom, threshold=1e-5, max_iterations=20_000, progress=False,
        ...                       momentum=otcal.Momentum(start=20))
        >>> bool(fast.converged), fast.n_iters < plain.n_iters
        (True, True)
    """

    def __init__(self, start: int = 0, error_threshold: float = math.inf, value: float = 1.0,
                 inner_iterations: int = 1):
        self.start = start
        self.error_threshold = error_threshold
        self.value = value
        self.inner_iterations = inner_iterations

    def __repr__(self) -> str:
        return f"Momentum(start={self.start}, error_threshold={self.error_threshold}, value={self.value})"


class AndersonAcceleration:
    """OTT-JAX's ``AndersonAcceleration``: every ``refresh_every`` iterations past the first
    ``memory``, f is replaced by the ridge-regularised combination of its last ``memory`` updates.

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(4)
        >>> geom = otcal.PointCloud(rng.normal(size=(50, 2)), rng.normal(size=(40, 2)), scale_cost="mean",
        ...                         epsilon=5e-2)
        >>> plain = otcal.sinkhorn(geom, threshold=1e-8, progress=False)
        >>> fast = otcal.sinkhorn(geom, threshold=1e-8, progress=False,
        ...                       anderson=otcal.AndersonAcceleration(memory=8, ridge_identity=1e-4))
        >>> bool(fast.converged), fast.n_iters < plain.n_iters
        (True, True)
    """

    def __init__(self, memory: int = 2, refresh_every: int = 1, ridge_identity: float = 1e-2):
        self.memory = memory
        self.refresh_every = refresh_every
        self.ridge_identity = ridge_identity

    def __repr__(self) -> str:
        return (f"AndersonAcceleration(memory={self.memory}, refresh_every={self.refresh_every}, "
                f"ridge_identity={self.ridge_identity})")


_OTT_INITIALIZERS = {"DefaultInitializer": "default", "GaussianInitializer": "gaussian"}


def _momentum_args(momentum: Any) -> dict:
    if momentum is None:
        return dict(momentum_start=0, momentum_error_threshold=math.inf, momentum_value=1.0)
    if isinstance(momentum, numbers.Real) and not isinstance(momentum, bool):
        return dict(momentum_start=0, momentum_error_threshold=math.inf, momentum_value=_real(momentum, "momentum"))
    if not all(hasattr(momentum, k) for k in ("start", "error_threshold", "value")):
        raise InvalidArgument(f"momentum: expected otcal.Momentum, OTT-JAX's Momentum or a number, "
                              f"got {type(momentum).__name__}")
    return dict(momentum_start=_int(momentum.start, "momentum.start", 0),
                momentum_error_threshold=_real(momentum.error_threshold, "momentum.error_threshold"),
                momentum_value=_real(momentum.value, "momentum.value"))


def _anderson_args(anderson: Any) -> dict:
    if anderson is None:
        return dict(anderson_memory=None, anderson_refresh_every=1, anderson_ridge=1e-2)
    if not all(hasattr(anderson, k) for k in ("memory", "refresh_every", "ridge_identity")):
        raise InvalidArgument(f"anderson: expected otcal.AndersonAcceleration or OTT-JAX's AndersonAcceleration, "
                              f"got {type(anderson).__name__}")
    return dict(anderson_memory=_int(anderson.memory, "anderson.memory"),
                anderson_refresh_every=_int(anderson.refresh_every, "anderson.refresh_every"),
                anderson_ridge=_real(anderson.ridge_identity, "anderson.ridge_identity"))


def _initializer_name(initializer: Any) -> str:
    if initializer is None:
        return "default"
    if isinstance(initializer, str):
        name = initializer.lower()
        if name in ("default", "zeros", "gaussian"):
            return "gaussian" if name == "gaussian" else "default"
        raise InvalidArgument(f"initializer: expected 'default' or 'gaussian', got {initializer!r}")
    cls = type(initializer).__name__
    if cls in _OTT_INITIALIZERS:
        return _OTT_INITIALIZERS[cls]
    raise InvalidArgument(f"initializer: {cls} is not offered (otcal has 'default' and 'gaussian'; OTT's "
                          "SortingInitializer needs the dense cost matrix and SubsampleInitializer a nested solve)")


def initial_potentials(
    geom: PointCloud,
    a: Any = None,
    b: Any = None,
    initializer: Any = "gaussian",
    precision: Optional[str] = None,
    device: str = "auto",
    memory_budget: Union[int, str, None] = None,
    context: Any = None,
) -> tuple[Any, Any]:
    """The ``(f, g)`` a solve with ``initializer`` starts from (OTT-JAX's
    ``initializer(LinearProblem(geom, a, b), lse_mode=True)``), as numpy arrays.

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(5)
        >>> geom = otcal.PointCloud(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 1.0)
        >>> f, g = otcal.initial_potentials(geom, initializer="gaussian")
        >>> f.shape, bool(abs(f.mean()) < 1e-12), bool((g == 0).all())
        ((30,), True, True)
    """
    if not isinstance(geom, PointCloud):
        raise InvalidArgument(f"geom: expected an otcal.PointCloud, got {type(geom).__name__}")
    n, m = geom.shape
    ctx = get_context(device, memory_budget, context=context)
    prec = _precision(precision, geom.dtype)
    a_arr = None if a is None else as_vector(a, "a", length=n)
    b_arr = None if b is None else as_vector(b, "b", length=m)
    with _library_call(ctx):
        problem = geom._problem(ctx, prec)
        return problem.initial_potentials(a_arr, b_arr, epsilon=geom.epsilon,
                                          relative_epsilon=geom.relative_epsilon or "",
                                          initializer=_initializer_name(initializer))


# ---------------------------------------------------------------------------------------------
# Sparsify foreign potentials


def sparsify(
    x: Any,
    y: Any,
    f: Any,
    g: Any,
    epsilon: float,
    scale_cost: Optional[ScaleCost] = None,
    cost_fn: Any = None,
    mode: SparsifyMode = "threshold",
    value: Optional[float] = None,
    max_k: Optional[int] = None,
    batch_size: Optional[int] = None,
    n_samples: Optional[int] = None,
    seed: int = 0,
    percentile_method: Literal["sampled", "exact"] = "sampled",
    precision: Optional[str] = None,
    device: str = "auto",
    memory_budget: Union[int, str, None] = None,
    context: Any = None,
    return_report: bool = False,
) -> Any:
    """A sparse plan from potentials computed elsewhere (OTT-JAX, moscot), in bounded memory.

    The plan is OTT-JAX's ``P_ij = exp((f_i + g_j - c(x_i, y_j) / s) / epsilon)``: ``c`` the
    unscaled cost, ``s`` the scale (OTT: ``1 / geom.inv_scale_cost``), ``epsilon`` that of the
    *scaled* cost (OTT: ``geom.epsilon``). Rows are recomputed block by block from the clouds; no
    dense ``n x m`` array is made, which is what runs out of memory in moscot's own sparsify of
    large problems (cellrank #1146).

    Args:
        x, y: the clouds the potentials were solved on (``y`` None: ``y = x``), or ``x`` an
            ``otcal.PointCloud`` (then ``y`` must be None, and its cost, scale and batch size apply).
        f, g: the potentials ``[n]``, ``[m]`` (numpy, JAX, PyTorch, CuPy; read through the host).
        epsilon: the epsilon of the scaled cost (OTT-JAX: ``out.geom.epsilon``).
        scale_cost: ``s``. Prefer the number OTT resolved, ``1 / out.geom.inv_scale_cost``; a name
            (``"mean"``, ``"max_cost"``, ``"median"``, ...) is resolved again here from the clouds
            (equal up to rounding). None: 1.0, or the PointCloud's.
        cost_fn: as ``PointCloud`` (an OTT cost object works: ``out.geom.cost_fn``). None:
            ``"sqeuclidean"``, or the PointCloud's.
        mode, value, max_k, batch_size, n_samples, seed, percentile_method, return_report: as
            ``SinkhornOutput.sparsify``.
        precision: of the plan values; None: float32 when x is float32, else float64.
        device, memory_budget, context: as ``sinkhorn``.

    Returns:
        ``scipy.sparse.csr_array`` ``[n, m]`` (and the report dict with ``return_report=True``).

    Example (an OTT-JAX solution)::

        geom = ott.geometry.pointcloud.PointCloud(x, y, scale_cost="mean", epsilon=1e-2)
        out = ott.solvers.linear.sinkhorn.Sinkhorn()(ott.problems.linear.linear_problem.LinearProblem(geom))
        T = otcal.sparsify(x, y, out.f, out.g, epsilon=float(out.geom.epsilon),
                           scale_cost=float(1 / out.geom.inv_scale_cost), cost_fn=out.geom.cost_fn,
                           mode="min_row")

    Example (self-contained):
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(9)
        >>> x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
        >>> out = otcal.sinkhorn(otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.1))
        >>> T = otcal.sparsify(x, y, out.f, out.g, epsilon=out.epsilon, scale_cost=out.scale, mode="threshold",
        ...                    value=1e-4)
        >>> T.shape
        (30, 20)
    """
    mode = _sparsify_mode(mode)
    method = _percentile_method(percentile_method)
    eps = _epsilon(epsilon)
    if eps is None:
        raise InvalidArgument("epsilon: required; pass the epsilon of the scaled cost (OTT-JAX: out.geom.epsilon)")
    if isinstance(x, PointCloud):
        if y is not None:
            raise InvalidArgument("y: must be None when x is an otcal.PointCloud (the geometry holds both clouds)")
        geom = x
        cost = geom.cost_fn if cost_fn is None else _cost_name(cost_fn)
        if cost != geom.cost_fn:
            raise InvalidArgument(f"cost_fn: {cost!r} differs from the PointCloud's {geom.cost_fn!r}")
        scale = geom.scale_cost if scale_cost is None else _scale_spec(scale_cost, cost)
        bs = geom.batch_size if batch_size is None else batch_size
    else:
        cost = "sqeuclidean" if cost_fn is None else _cost_name(cost_fn)
        scale = 1.0 if scale_cost is None else _scale_spec(scale_cost, cost)
        geom = PointCloud(x, y, cost_fn=cost, scale_cost=scale)
        bs = batch_size
    n, m = geom.shape
    f_host = as_vector(_to_host(f), "f", length=n)
    g_host = as_vector(_to_host(g), "g", length=m)
    prec = _precision(precision, geom.dtype)
    ctx = get_context(device, memory_budget, context=context)
    args = dict(mode=mode, value=None if value is None else _real(value, "value"),
                max_k=_optional_int(max_k, "max_k"), batch_size=_optional_int(bs, "batch_size"),
                n_samples=_optional_int(n_samples, "n_samples"), seed=_int(seed, "seed", 0),
                percentile_method=method)
    with _library_call(ctx):
        if isinstance(scale, float) and geom is not x:
            # One call: the library plans it before uploading, so BudgetTooSmall names the minimum
            # of the whole call; nothing stays resident.
            potentials = _otcal.Potentials(f_host, g_host, eps, scale, cost, prec)
            _wait_for_producer(geom.x)
            _wait_for_producer(geom.y)
            parts = _otcal.sparsify_once(ctx, geom.x, geom.y, cost, scale, potentials, **args)
        else:
            problem = geom._problem(ctx, prec)
            resolved = scale if isinstance(scale, float) else problem.resolve(eps, "", None)[0]
            potentials = _otcal.Potentials(f_host, g_host, eps, resolved, cost, prec)
            parts = problem.sparsify(potentials, **args)
    csr = _csr(parts)
    return (csr, _report(parts)) if return_report else csr
