"""Tensor-network property models on invariant descriptor tensors (Sommer & Dunham, Sec. III).

A structure is represented by its averaged power spectrum (eq. 22)

    B̄[α1, α2, n1, n2, l] = (1/N) Σ_i B_i[α1, α2, n1, n2, l]

and a scalar property is a learned functional of that tensor. The models here differ only in
how the weights are factorised:

* :class:`DenseTensorRegressor` — ``y = <W|B> + b`` with a dense weight tensor ``W`` (Fig. 5, eq. 16);
* :class:`MPSRegressor` — ``W`` is a matrix product state over the descriptor indices (eqs. 16–17);
* :class:`MPORegressor` — ``y = <B|T|B> + b`` with an MPO ``T`` acting on two copies of the
  descriptor (eq. 18, Fig. 7b), a learnable ζ = 2 kernel; optionally plus a linear MPS term
  ``<W|B>`` (``linear_chi``);
* :class:`TTNRegressor`, :class:`MERARegressor` — ``W`` is a binary tree tensor network, without
  or with disentanglers (Fig. 29);
* :class:`FeatureMapMPS` — Stoudenmire & Schwab: the flattened descriptor, scaled to [0, 1], is
  embedded as the product state ``⊗_k [1 − x_k, x_k]`` (eq. 19) and contracted with an MPS (Fig. 11).

Every model sees *normalised* inputs ``x_n = (B − mean) / scale`` (a per-entry mean and one
global scale, set by :meth:`DescriptorModel.set_normalization`; centring is optional and, for the
models linear in ``B``, only moves the bias) and returns ``target_scale * raw + target_shift``.
With a structure index the input rows are atoms and the per-row values are summed per structure
with ``index_add`` (the per-atom form of eq. 1 instead of eq. 22).

Training: :func:`fit_model` (Adam or full-batch L-BFGS, MSE or Huber loss, early stopping on a
validation split, best weights restored); :func:`linear_warm_start` (the convex ridge/Huber
linear fit, loaded into an MPS by TT-SVD or into the linear term of an MPO);
:meth:`MPSRegressor.als_sweep` (two-site sweeps with an exact ridge least-squares solve of the
bond tensor, split by :func:`entangle.tn.split`); :meth:`MPORegressor.gradient_sweep` (two-site
sweeps with monotone local gradient steps).

>>> import torch
>>> from entangle.models.descriptor_tn import MPSRegressor, MPSConfig
>>> model = MPSRegressor(MPSConfig(dims=[2, 2, 3, 3, 2], chi=4))
>>> model(torch.randn(7, 2, 2, 3, 3, 2, dtype=torch.float64)).shape
torch.Size([7])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.io import DTYPES, register_model
from entangle.tn import MPO, MPS, merge, split

__all__ = [
    "DEFAULT_INDEX_NAMES", "DescriptorModelConfig", "DescriptorModel",
    "DenseTensorConfig", "DenseTensorRegressor", "MPSConfig", "MPSRegressor", "MPOConfig", "MPORegressor",
    "TreeConfig", "TTNRegressor", "MERARegressor", "FeatureMapConfig", "FeatureMapMPS",
    "TrainHistory", "fit_model", "linear_warm_start", "sum_by_structure", "check_targets",
]

#: Names of the indices of the power spectrum B(2) (eq. 14), in tensor order.
DEFAULT_INDEX_NAMES = ("alpha1", "alpha2", "n1", "n2", "l")
_CONTRACTIONS = ("auto", "dense", "sweep")
# "auto" forms the dense weight tensor when it has at most this many entries: one GEMV per batch
# is then far cheaper than a site-by-site contraction (4 ms vs 130 ms fwd+bwd, batch 2400,
# dims (3,3,4,4,4), one thread).
_DENSE_LIMIT = 1 << 20
_DENSE_OPERATOR_LIMIT = 1 << 12  # MPO: the dense operator has prod(dims)**2 entries


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------- configs
@dataclass
class DescriptorModelConfig:
    """Hyperparameters shared by every descriptor model.

    Parameters
    ----------
    dims : sizes of the descriptor indices, e.g. ``[n_species, n_species, n_max, n_max, l_max + 1]``.
    index_names : one name per index (default :data:`DEFAULT_INDEX_NAMES` for five indices,
        ``i0, i1, ...`` otherwise); used to name bipartitions in the analysis.
    dtype : ``"float64"`` or ``"float32"``.
    seed : seeds the initial weights.
    center_inputs : subtract the per-entry training mean of the descriptor before the model.
    """

    dims: list[int]
    index_names: list[str] | None = None
    dtype: str = "float64"
    seed: int = 0
    center_inputs: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.dims, (list, tuple)) or not self.dims:
            raise ConfigError(f"{name}.dims must be a non-empty list of integers, got {self.dims!r}")
        if not all(_is_int(d) and d >= 1 for d in self.dims):
            raise ConfigError(f"{name}.dims must be integers >= 1, got {self.dims!r}")
        self.dims = [int(d) for d in self.dims]
        if self.index_names is None:
            self.index_names = (list(DEFAULT_INDEX_NAMES) if len(self.dims) == len(DEFAULT_INDEX_NAMES)
                                else [f"i{k}" for k in range(len(self.dims))])
        self.index_names = [str(s) for s in self.index_names]
        if len(self.index_names) != len(self.dims) or len(set(self.index_names)) != len(self.dims):
            raise ConfigError(f"{name}.index_names must be {len(self.dims)} distinct names, got {self.index_names}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"{name}.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"{name}.seed must be an integer, got {self.seed!r}")


def _check_chi(config, name: str = "chi") -> None:
    value = getattr(config, name)
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{type(config).__name__}.{name} must be an integer >= 1, got {value!r}")


def _check_site_order(config) -> None:
    n = len(config.dims)
    if config.site_order is None:
        config.site_order = list(range(n))
    order = list(config.site_order)
    if sorted(order) != list(range(n)) or not all(_is_int(o) for o in order):
        raise ConfigError(f"{type(config).__name__}.site_order must be a permutation of 0..{n - 1}, got {order}")
    config.site_order = [int(o) for o in order]


def _check_contraction(config) -> None:
    if config.contraction not in _CONTRACTIONS:
        raise ConfigError(f"{type(config).__name__}.contraction must be one of {_CONTRACTIONS}, "
                          f"got {config.contraction!r}")


@dataclass
class DenseTensorConfig(DescriptorModelConfig):
    """:class:`DenseTensorRegressor`. ``init_std``: std of the i.i.d. Gaussian initial weights
    (default ``1/sqrt(prod(dims))``, a unit-norm weight tensor in expectation)."""

    init_std: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_std is not None and not (self.init_std > 0 and math.isfinite(self.init_std)):
            raise ConfigError(f"DenseTensorConfig.init_std must be a positive number, got {self.init_std}")


@dataclass
class MPSConfig(DescriptorModelConfig):
    """:class:`MPSRegressor`.

    Parameters
    ----------
    chi : bond dimension (capped at every bond by the full rank of the cut).
    site_order : permutation of the descriptor indices giving the MPS site order
        (default identity: alpha1 alpha2 n1 n2 l).
    contraction : ``"dense"`` (form the weight tensor, one GEMV), ``"sweep"`` (contract site by
        site, :meth:`entangle.tn.MPS.contract_dense`) or ``"auto"`` (dense when it is small).
    """

    chi: int = 8
    site_order: list[int] | None = None
    contraction: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_chi(self)
        _check_site_order(self)
        _check_contraction(self)
        if len(self.dims) < 2:
            raise ConfigError("MPSConfig.dims needs at least two indices")


@dataclass
class MPOConfig(MPSConfig):
    """:class:`MPORegressor`: same fields as :class:`MPSConfig`; ``chi`` is the MPO bond dimension.

    ``center_inputs`` is off by default: ``<B|T|B>`` of the raw descriptor ``B = m + δ`` contains
    the linear term ``2<m|T|δ>``, which centring would remove from the model.

    ``linear_chi``: bond dimension of an optional explicit linear term ``<W|B>`` (an MPS over the
    same sites, as in :class:`MPSRegressor`), ``y = <B|T|B> + <W|B> + b`` (ζ = 2 plus ζ = 1);
    0 (default) leaves the pure quadratic form of eq. 18.
    """

    center_inputs: bool = False
    linear_chi: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.linear_chi) or self.linear_chi < 0:
            raise ConfigError(f"MPOConfig.linear_chi must be an integer >= 0, got {self.linear_chi!r}")


@dataclass
class TreeConfig(MPSConfig):
    """:class:`TTNRegressor` and :class:`MERARegressor`: ``chi`` caps the output dimension of every
    isometry; the tree pairs neighbouring sites in ``site_order``, level by level."""


@dataclass
class FeatureMapConfig(DescriptorModelConfig):
    """:class:`FeatureMapMPS`.

    Parameters
    ----------
    chi : bond dimension of the MPS over the ``prod(dims)`` flattened features.
    init_noise : std of the Gaussian perturbation of the identity initial cores.
    """

    chi: int = 8
    init_noise: float = 1e-2
    center_inputs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_chi(self)
        if not (self.init_noise >= 0 and math.isfinite(self.init_noise)):
            raise ConfigError(f"FeatureMapConfig.init_noise must be a finite number >= 0, got {self.init_noise}")


# -------------------------------------------------------------------------------- input checking
def _as_real_tensor(x, field_name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.is_complex() or not x.is_floating_point():
        raise DataError(f"must be a real floating-point array, got dtype {x.dtype}", field=field_name)
    return x


def check_targets(y, n: int, *, field_name: str = "target") -> torch.Tensor:
    """Validate targets: a finite 1-D array of length ``n`` (one value per structure)."""
    y = _as_real_tensor(y, field_name)
    if y.dim() != 1 or y.shape[0] != n:
        raise ShapeError(f"{field_name} must have shape ({n},) (one value per structure), got {tuple(y.shape)}")
    bad = (~torch.isfinite(y)).nonzero()
    if bad.numel():
        raise DataError("non-finite value (NaN or inf)", index=int(bad[0, 0]), field=field_name)
    return y


def _check_structure_index(structure_index, n_rows: int, n_structures: int | None) -> tuple[torch.Tensor, int]:
    idx = structure_index if isinstance(structure_index, torch.Tensor) else torch.as_tensor(np.asarray(structure_index))
    if idx.dtype.is_floating_point or idx.is_complex() or idx.dtype == torch.bool:
        raise DataError(f"must hold integers, got dtype {idx.dtype}", field="structure_index")
    if idx.dim() != 1 or idx.shape[0] != n_rows:
        raise ShapeError(f"structure_index must have shape ({n_rows},) (one entry per descriptor row), "
                         f"got {tuple(idx.shape)}")
    idx = idx.long()
    if n_rows and int(idx.min()) < 0:
        raise DataError(f"negative structure index {int(idx.min())}", field="structure_index")
    if n_structures is None:
        n_structures = int(idx.max()) + 1 if n_rows else 0
    if n_rows and int(idx.max()) >= n_structures:
        raise DataError(f"index {int(idx.max())} >= n_structures={n_structures}", field="structure_index")
    counts = torch.bincount(idx, minlength=n_structures)
    empty = (counts == 0).nonzero()
    if empty.numel():
        raise DataError("has no descriptor rows (atoms)", index=int(empty[0, 0]), field="structure_index")
    return idx, n_structures


def sum_by_structure(values: torch.Tensor, structure_index: torch.Tensor, n_structures: int) -> torch.Tensor:
    """Sum per-row values into per-structure totals.

    Parameters
    ----------
    values : (n_rows, ...)
    structure_index : (n_rows,) long, structure of each row
    n_structures : number of structures

    Returns
    -------
    (n_structures, ...) tensor
    """
    out = torch.zeros((n_structures, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add(0, structure_index.to(values.device), values)


def _inverse(order: Sequence[int]) -> list[int]:
    inv = [0] * len(order)
    for position, index in enumerate(order):
        inv[index] = position
    return inv


def _capped_bonds(site_dims: Sequence[int], chi: int, power: int = 1) -> list[int]:
    """Bond dimensions ``min(chi, rank bound of the cut)`` for sites of size ``d**power``."""
    sizes = [d**power for d in site_dims]
    return [min(chi, math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))]


# -------------------------------------------------------------------------------------- base class
class DescriptorModel(nn.Module):
    """Base class: validation, normalisation, per-structure sums; subclasses implement :meth:`raw`.

    Buffers
    -------
    input_mean : (*dims) per-entry descriptor mean (zeros when ``center_inputs`` is False).
    input_scale : 0-dim, RMS Frobenius norm of the centred training descriptors.
    target_shift, target_scale : 0-dim, per-row target mean and std (target units).
    """

    config_class: ClassVar[type] = DescriptorModelConfig

    def __init__(self, config: DescriptorModelConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        dtype = DTYPES[config.dtype]
        self.register_buffer("input_mean", torch.zeros(config.dims, dtype=dtype))
        self.register_buffer("input_scale", torch.ones((), dtype=dtype))
        self.register_buffer("target_shift", torch.zeros((), dtype=dtype))
        self.register_buffer("target_scale", torch.ones((), dtype=dtype))

    @classmethod
    def from_config(cls, config: dict | DescriptorModelConfig) -> DescriptorModel:
        """Rebuild from a config dataclass or its ``asdict`` form."""
        if isinstance(config, dict):
            config = cls.config_class(**config)
        return cls(config)

    # ------------------------------------------------------------------------------ properties
    @property
    def dims(self) -> list[int]:
        return list(self.config.dims)

    @property
    def index_names(self) -> list[str]:
        return list(self.config.index_names)

    @property
    def n_features(self) -> int:
        return math.prod(self.config.dims)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------ validation
    def check_input(self, x) -> torch.Tensor:
        """Validate a batch of descriptors ``(batch, *dims)`` and cast it to the model dtype.

        Raises :class:`ShapeError` for a wrong shape and :class:`DataError` for NaN/inf entries
        (naming the first offending row).
        """
        x = _as_real_tensor(x, "descriptor")
        dims = tuple(self.config.dims)
        if x.dim() != 1 + len(dims) or tuple(x.shape[1:]) != dims:
            names = ", ".join(f"{n}={d}" for n, d in zip(self.config.index_names, dims))
            raise ShapeError(f"{type(self).__name__}: descriptor must have shape (batch, {', '.join(map(str, dims))}) "
                             f"[{names}], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ShapeError(f"{type(self).__name__}: empty batch")
        bad = (~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)).nonzero()
        if bad.numel():
            raise DataError("non-finite entries (NaN or inf)", index=int(bad[0, 0]), field="descriptor")
        return x.to(dtype=self.dtype, device=self.input_mean.device)

    # --------------------------------------------------------------------------- normalisation
    def normalize_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - input_mean) / input_scale``; ``x: (batch, *dims)``."""
        return (x - self.input_mean) / self.input_scale

    @torch.no_grad()
    def set_normalization(self, x, y, structure_index=None, n_structures: int | None = None) -> None:
        """Set input and target normalisation from training data.

        Parameters
        ----------
        x : (n_rows, *dims) descriptors (averaged per structure, or per atom with ``structure_index``).
        y : (n_structures,) targets.
        structure_index : (n_rows,) structure of each row, or None when rows are structures.
        """
        x = self.check_input(x)
        if structure_index is None:
            counts = torch.ones(x.shape[0], dtype=self.dtype)
        else:
            idx, n_structures = _check_structure_index(structure_index, x.shape[0], n_structures)
            counts = torch.bincount(idx, minlength=n_structures).to(self.dtype)
        y = check_targets(y, counts.shape[0]).to(self.dtype)
        self._fit_input_normalization(x)
        per_row = (y / counts.to(y.device)).cpu()  # targets per descriptor row
        self.target_shift.fill_(float(per_row.mean()))
        std = float(per_row.std()) if per_row.numel() > 1 else 0.0
        self.target_scale.fill_(std if std > 0 else 1.0)

    def _fit_input_normalization(self, x: torch.Tensor) -> None:
        mean = x.mean(0) if self.config.center_inputs else torch.zeros_like(self.input_mean)
        self.input_mean.copy_(mean)
        rms = float(torch.sqrt(((x - mean) ** 2).reshape(x.shape[0], -1).sum(1).mean()))
        self.input_scale.fill_(rms if rms > 0 else 1.0)

    # --------------------------------------------------------------------------------- forward
    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        """Model output in normalised units for normalised inputs ``xn: (batch, *dims)`` -> ``(batch,)``."""
        raise NotImplementedError

    def _forward_checked(self, x: torch.Tensor, structure_index: torch.Tensor | None, n_structures: int) -> torch.Tensor:
        values = self.target_scale * self.raw(self.normalize_inputs(x)) + self.target_shift  # [rows]
        if structure_index is None:
            return values
        return sum_by_structure(values, structure_index, n_structures)

    def forward(self, x, structure_index=None, n_structures: int | None = None) -> torch.Tensor:
        """Predicted property.

        Parameters
        ----------
        x : (batch, *dims) averaged descriptors (eq. 22), or (n_atoms_total, *dims) per-atom
            descriptors together with ``structure_index``.
        structure_index : (n_atoms_total,) integers, structure of each row; the per-row values
            are summed per structure.
        n_structures : number of structures (default ``max(structure_index) + 1``).

        Returns
        -------
        (batch,) or (n_structures,) tensor in target units.
        """
        x = self.check_input(x)
        idx = None
        if structure_index is not None:
            idx, n_structures = _check_structure_index(structure_index, x.shape[0], n_structures)
            idx = idx.to(x.device)
        return self._forward_checked(x, idx, n_structures or 0)

    def extra_repr(self) -> str:
        return f"dims={self.config.dims}, parameters={self.num_parameters()}"


def _to_original_order(tensor: torch.Tensor, order: Sequence[int], n_groups: int = 1) -> torch.Tensor:
    """Permute legs from site order back to descriptor order; ``n_groups`` blocks of ``len(order)``
    legs (2 for an operator ``(out..., in...)``)."""
    n = len(order)
    inv = _inverse(order)
    perm = [g * n + inv[j] for g in range(n_groups) for j in range(n)]
    return tensor.permute(perm)


# ---------------------------------------------------------------------------------- dense tensor
@register_model
class DenseTensorRegressor(DescriptorModel):
    """``y = <W|B> + b`` with a dense weight tensor ``W: (*dims)`` (eq. 16, Fig. 5)."""

    config_class = DenseTensorConfig

    def __init__(self, config: DenseTensorConfig):
        super().__init__(config)
        gen = torch.Generator().manual_seed(config.seed)
        std = config.init_std if config.init_std is not None else 1.0 / math.sqrt(self.n_features)
        w = torch.randn(config.dims, generator=gen, dtype=torch.float64) * std
        self.weight = nn.Parameter(w.to(self.dtype))  # (*dims)
        self.bias = nn.Parameter(torch.zeros((), dtype=self.dtype))

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        return xn.reshape(xn.shape[0], -1) @ self.weight.reshape(-1) + self.bias  # [batch]

    def weight_tensor(self) -> torch.Tensor:
        """The weight tensor ``(*dims)`` (acts on normalised descriptors)."""
        return self.weight

    @torch.no_grad()
    def state_tensor(self) -> torch.Tensor:
        """Dense learned state ``|psi(w)>`` with one leg per descriptor index, float64."""
        return self.weight_tensor().detach().to(torch.float64)


# ----------------------------------------------------------------------------------------- MPS
class _TensorTrain(DescriptorModel):
    """Shared by the chain models: cores ``self.cores`` in ``config.site_order``, bond last."""

    @property
    def site_order(self) -> list[int]:
        return list(self.config.site_order)

    @property
    def bond_dims(self) -> list[int]:
        """Current bond dimensions (sweeps may change them)."""
        return [int(c.shape[-1]) for c in self.cores[:-1]]

    def _sweep_targets(self, x, y, structure_index, n_structures: int | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, int, torch.Tensor, torch.Tensor]:
        """Checked inputs for a sweep: ``x``, the structure index of each row (or None), the
        number of structures, the rows per structure ``(n_structures,)`` and the normalised
        targets ``(n_structures,)``."""
        x = self.check_input(x)
        idx = None
        if structure_index is None:
            counts = torch.ones(x.shape[0], dtype=self.dtype, device=x.device)
            n_structures = x.shape[0]
        else:
            idx, n_structures = _check_structure_index(structure_index, x.shape[0], n_structures)
            idx = idx.to(x.device)
            counts = torch.bincount(idx, minlength=n_structures).to(self.dtype)
        y = check_targets(y, n_structures).to(self.dtype).to(x.device)
        return x, idx, n_structures, counts, (y - counts * self.target_shift) / self.target_scale


@register_model
class MPSRegressor(_TensorTrain):
    """``y = <psi(w)|B> + b`` with ``psi`` a matrix product state over the descriptor indices
    (eqs. 16–17): cores ``(chi_{k-1}, d_k, chi_k)`` in ``site_order``, ``chi_0 = chi_N = 1``.

    Initialised as a unit-norm Gaussian random MPS (:meth:`entangle.tn.MPS.random`).
    """

    config_class = MPSConfig

    def __init__(self, config: MPSConfig):
        super().__init__(config)
        site_dims = [config.dims[p] for p in config.site_order]
        gen = torch.Generator().manual_seed(config.seed)
        psi = MPS.random(site_dims, _capped_bonds(site_dims, config.chi), generator=gen, dtype=torch.float64)
        self.cores = nn.ParameterList([nn.Parameter(c.to(self.dtype)) for c in psi.cores])
        self.bias = nn.Parameter(torch.zeros((), dtype=self.dtype))

    def to_mps(self) -> MPS:
        """The learned state as an :class:`entangle.tn.MPS` in site order (shares storage, no grad)."""
        return MPS([c.detach() for c in self.cores])

    def _use_dense(self) -> bool:
        mode = self.config.contraction
        return mode == "dense" or (mode == "auto" and self.n_features <= _DENSE_LIMIT)

    def weight_tensor(self) -> torch.Tensor:
        """Dense ``psi`` with legs in descriptor order ``(*dims)`` (differentiable)."""
        return _to_original_order(MPS(list(self.cores)).to_dense(), self.config.site_order)

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        if self._use_dense():
            return xn.reshape(xn.shape[0], -1) @ self.weight_tensor().reshape(-1) + self.bias  # [batch]
        xs = xn.permute(0, *[1 + p for p in self.config.site_order])  # [batch, *site_dims]
        return MPS(list(self.cores)).contract_dense(xs) + self.bias

    @torch.no_grad()
    def state_tensor(self) -> torch.Tensor:
        """Dense learned state with one leg per descriptor index (descriptor order), float64."""
        return self.weight_tensor().detach().to(torch.float64)

    @torch.no_grad()
    def bond_entropies(self) -> torch.Tensor:
        """Von Neumann entropies (nats) across the ``N - 1`` bonds in site order."""
        return self.to_mps().to(torch.float64).entropies()

    # ------------------------------------------------------------------- two-site ALS (DMRG-like)
    @torch.no_grad()
    def als_sweep(self, x, y, structure_index=None, n_structures: int | None = None, *, n_sweeps: int = 1,
                  ridge: float = 1e-8, max_bond: int | None = None, cutoff: float | None = None) -> list[float]:
        """Two-site alternating least squares, left-to-right then right-to-left.

        The model is linear in the merged bond tensor ``theta = merge(A_k, A_{k+1})``: with the
        other cores in mixed-canonical form, ``raw(x) = <Phi_k(x), theta> + b`` and the local
        problem

            min_{theta, b}  mean_s (Phi_k(x_s)·theta + c_s b − y_s)^2 + ridge ||theta||^2

        is solved exactly (``c_s`` = rows per structure). Because the environment cores are
        isometric, ``||theta|| = ||psi||``, so the objective is the same global function at every
        step: without truncation it never increases. ``theta`` is then split by
        :func:`entangle.tn.split` with ``max_bond``/``cutoff`` (truncation can raise it).

        Parameters
        ----------
        x : (n_rows, *dims) descriptors; y : (n_structures,) targets (target units).
        n_sweeps : number of full (left-right-left) sweeps.
        ridge : ridge weight on ``||psi||^2`` in normalised units (>= 0).
        max_bond, cutoff : truncation of the split (None: keep the full rank).

        Returns
        -------
        Objective (normalised MSE + ridge ||psi||^2) after every two-site update, truncation included.
        """
        if not (ridge >= 0 and math.isfinite(ridge)):
            raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}")
        if not _is_int(n_sweeps) or n_sweeps < 1:
            raise ConfigError(f"n_sweeps must be an integer >= 1, got {n_sweeps}")
        if max_bond is not None and (not _is_int(max_bond) or max_bond < 1):
            raise ConfigError(f"max_bond must be an integer >= 1, got {max_bond}")
        x, idx, n_structures, counts, yn = self._sweep_targets(x, y, structure_index,
                                                               n_structures)
        xs = self.normalize_inputs(x).permute(0, *[1 + p for p in self.config.site_order])  # [rows, *site_dims]
        n_sites = len(self.cores)
        cores = list(MPS([c.detach() for c in self.cores]).canonicalize(0).cores)
        bias = self.bias.detach().clone()
        history: list[float] = []
        schedule = [(k, "right") for k in range(n_sites - 1)] + [(k, "left") for k in range(n_sites - 2, -1, -1)]
        for _ in range(n_sweeps):
            for k, absorb in schedule:
                phi = _two_site_features(xs, cores, k)  # [rows, Dl*d*d*Dr]
                if idx is not None:
                    phi = sum_by_structure(phi, idx, n_structures)  # [structures, p]
                theta_flat, bias = _ridge_solve(phi, counts, yn, ridge)
                theta = theta_flat.reshape(cores[k].shape[0], cores[k].shape[1], cores[k + 1].shape[1], -1)
                a, b, _, _ = split(theta, 1, max_bond=max_bond, cutoff=cutoff, absorb=absorb)
                cores[k], cores[k + 1] = a, b
                centre = cores[k + 1] if absorb == "right" else cores[k]
                pred = _mps_features_value(xs, cores, idx, n_structures) + counts * bias
                history.append(float(((pred - yn) ** 2).mean() + ridge * (centre**2).sum()))
        for k, core in enumerate(cores):
            self.cores[k] = nn.Parameter(core.contiguous())
        self.bias.data = bias.reshape(()).to(self.bias.dtype)
        return history


def _left_environment(xs: torch.Tensor, cores: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Contract sites ``0..k-1`` of ``xs: (rows, *site_dims)`` -> ``(rows, D_{k-1}, d_k, ..., d_N)``."""
    rows = xs.shape[0]
    env = xs.reshape(rows, 1, -1)  # [rows, D_left, rest]
    for core in cores[:k]:
        dl, d, dr = core.shape
        env = env.reshape(rows, dl * d, -1)
        env = torch.einsum("zkr,kq->zqr", env, core.reshape(dl * d, dr))  # [rows, D_right, rest]
    return env


def _right_block(cores: Sequence[torch.Tensor], start: int) -> torch.Tensor:
    """Dense contraction of cores ``start..N-1`` -> ``(D_{start-1}, prod d_start..d_N)``."""
    if start >= len(cores):
        return torch.ones(1, 1, dtype=cores[0].dtype, device=cores[0].device)
    block = cores[-1].reshape(cores[-1].shape[0], -1)  # [D, d_N]
    for core in reversed(cores[start:-1]):
        dl, d, dr = core.shape
        block = (core.reshape(dl * d, dr) @ block).reshape(dl, -1)
    return block


def _two_site_features(xs: torch.Tensor, cores: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Features of the bond tensor of sites ``k, k+1``: ``(rows, D_{k-1} d_k d_{k+1} D_{k+1})``."""
    rows = xs.shape[0]
    env = _left_environment(xs, cores, k)  # [rows, D_{k-1}, d_k .. d_N]
    dl, dk, dk1 = cores[k].shape[0], cores[k].shape[1], cores[k + 1].shape[1]
    right = _right_block(cores, k + 2)  # [D_{k+1}, rest]
    env = env.reshape(rows, dl * dk * dk1, -1)
    return torch.einsum("zpr,qr->zpq", env, right).reshape(rows, -1)


def _mps_features_value(xs, cores, idx, n_structures) -> torch.Tensor:
    """``<psi|x>`` per row (``xs`` and cores in site order), summed per structure when ``idx`` is given."""
    values = xs.reshape(xs.shape[0], -1) @ MPS(cores).to_dense().reshape(-1)  # [rows]
    return values if idx is None else sum_by_structure(values, idx, n_structures)


def _ridge_solve(phi: torch.Tensor, counts: torch.Tensor, y: torch.Tensor, ridge: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean (phi theta + counts b - y)^2 + ridge |theta|^2`` over ``theta`` and ``b``."""
    n, p = phi.shape
    a = torch.cat([phi, counts.unsqueeze(1)], dim=1)  # [n, p+1]
    if ridge > 0:
        gram = a.T @ a / n
        gram[torch.arange(p), torch.arange(p)] += ridge  # the bias is not regularised
        rhs = a.T @ y / n
        try:
            sol = torch.linalg.solve(gram, rhs)
        except RuntimeError:  # singular even with the ridge (e.g. a constant zero column block)
            sol = torch.linalg.lstsq(gram.cpu(), rhs.cpu().unsqueeze(1), driver="gelsd").solution[:, 0].to(phi.device)
    else:
        sol = torch.linalg.lstsq(a.cpu(), y.cpu().unsqueeze(1), driver="gelsd").solution[:, 0].to(phi.device)
    return sol[:p], sol[p]


# ----------------------------------------------------------------------------------------- MPO
@register_model
class MPORegressor(_TensorTrain):
    """``y = <B|T|B> + b`` with ``T`` a matrix product operator on the descriptor indices
    (eq. 18, Fig. 7b): cores ``(chi_{k-1}, d_k, d_k, chi_k)`` (out, in) in ``site_order``.

    A learnable ζ = 2 structural kernel (Sec. III A): the model sees two copies of the descriptor.
    Initialised as a Gaussian random MPO whose dense entries have std ``1/sqrt(prod(dims))``.
    """

    config_class = MPOConfig

    def __init__(self, config: MPOConfig):
        super().__init__(config)
        site_dims = [config.dims[p] for p in config.site_order]
        gen = torch.Generator().manual_seed(config.seed)
        op = MPO.random(site_dims, site_dims, _capped_bonds(site_dims, config.chi, power=2), generator=gen,
                        dtype=torch.float64)
        self.cores = nn.ParameterList([nn.Parameter(c.to(self.dtype)) for c in op.cores])
        self.bias = nn.Parameter(torch.zeros((), dtype=self.dtype))
        if config.linear_chi:
            psi = MPS.random(site_dims, _capped_bonds(site_dims, config.linear_chi), generator=gen,
                             dtype=torch.float64) * 1e-3
            self.linear_cores = nn.ParameterList([nn.Parameter(c.to(self.dtype)) for c in psi.cores])

    def to_mpo(self) -> MPO:
        """The learned operator as an :class:`entangle.tn.MPO` in site order (no grad)."""
        return MPO([c.detach() for c in self.cores])

    def _use_dense(self) -> bool:
        mode = self.config.contraction
        return mode == "dense" or (mode == "auto" and self.n_features <= _DENSE_OPERATOR_LIMIT)

    def operator_tensor(self) -> torch.Tensor:
        """Dense ``T`` with legs ``(out_1..out_N, in_1..in_N)`` in descriptor order (differentiable)."""
        return _to_original_order(MPO(list(self.cores)).to_dense(), self.config.site_order, n_groups=2)

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        values = _quadratic_form(xn, list(self.cores), self.config.site_order, self._use_dense()) + self.bias
        return values if not self.config.linear_chi else values + self._linear_values(xn)

    def _linear_values(self, xn: torch.Tensor) -> torch.Tensor:
        """The explicit linear term ``<W|x>`` per row (``linear_chi > 0``)."""
        w = MPS(list(self.linear_cores)).to_dense()  # site order
        xs = xn.permute(0, *[1 + p for p in self.config.site_order])
        return xs.reshape(xs.shape[0], -1) @ w.reshape(-1)

    def linear_tensor(self) -> torch.Tensor | None:
        """Dense ``W`` of the linear term in descriptor order, or None without one."""
        if not self.config.linear_chi:
            return None
        return _to_original_order(MPS(list(self.linear_cores)).to_dense(), self.config.site_order)

    @torch.no_grad()
    def state_tensor(self) -> torch.Tensor:
        """Choi vector ``|T>`` (Fig. 13): legs ``(d_1**2, ..., d_N**2)`` in descriptor order, each
        fusing (out, in) of one index; computed with :meth:`entangle.tn.MPO.to_mps`."""
        choi = self.to_mpo().to(torch.float64).to_mps().to_dense()  # site order, legs d_k^2
        return _to_original_order(choi, self.config.site_order)

    @torch.no_grad()
    def bond_entropies(self) -> torch.Tensor:
        """Entropies (nats) of the Choi MPS across the bonds in site order."""
        return self.to_mpo().to(torch.float64).to_mps().entropies()

    # ------------------------------------------------------------ two-site local gradient sweeps
    def gradient_sweep(self, x, y, structure_index=None, n_structures: int | None = None, *, n_sweeps: int = 1,
                       steps: int = 10, ridge: float = 0.0, max_bond: int | None = None,
                       cutoff: float | None = None) -> list[float]:
        """DMRG-like two-site sweeps with local gradient descent on the merged bond tensor.

        ``<B|T|B>`` is linear in each two-site tensor ``theta`` (Dl, o, i, o', i', Dr); with the
        other cores in mixed-canonical form ``||theta|| = ||T||``. Each bond takes ``steps``
        gradient steps on ``mean (pred - y)^2 + ridge ||theta||^2`` (normalised units) with a
        backtracking (Armijo) line search, so the objective never increases before the split;
        the split by :func:`entangle.tn.split` (``max_bond``/``cutoff``) moves the centre.

        Returns
        -------
        Objective after every two-site update (truncation included).
        """
        if not _is_int(steps) or steps < 1 or not _is_int(n_sweeps) or n_sweeps < 1:
            raise ConfigError(f"steps and n_sweeps must be integers >= 1, got {steps}, {n_sweeps}")
        if not (ridge >= 0 and math.isfinite(ridge)):
            raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}")
        x, idx, n_structures, counts, yn = self._sweep_targets(x, y, structure_index,
                                                               n_structures)
        xn = self.normalize_inputs(x).detach()
        if self.config.linear_chi:  # the linear term is held fixed during the sweep
            with torch.no_grad():
                offset = self._linear_values(xn)
            offset = offset if idx is None else sum_by_structure(offset, idx, n_structures)
            yn = yn - offset
        order = self.config.site_order
        n_sites = len(self.cores)
        cores = list(MPO([c.detach() for c in self.cores]).canonicalize(0).cores)
        bias = self.bias.detach().clone()
        history: list[float] = []
        lr = 1.0

        def objective(theta, b, k):
            block = theta.permute(0, 1, 3, 2, 4, 5)  # [Dl, o, o', i, i', Dr]
            fused = block.reshape(theta.shape[0], theta.shape[1] * theta.shape[3], theta.shape[2] * theta.shape[4], -1)
            values = _quadratic_form(xn, cores[:k] + [fused] + cores[k + 2:], order, self._use_dense()) + b
            pred = values if idx is None else sum_by_structure(values, idx, n_structures)
            return ((pred - yn) ** 2).mean() + ridge * (theta**2).sum()

        schedule = [(k, "right") for k in range(n_sites - 1)] + [(k, "left") for k in range(n_sites - 2, -1, -1)]
        for _ in range(n_sweeps):
            for k, absorb in schedule:
                theta = merge(cores[k], cores[k + 1]).clone()
                b = bias.clone()
                for _step in range(steps):
                    theta.requires_grad_(True)
                    b.requires_grad_(True)
                    with torch.enable_grad():
                        f0 = objective(theta, b, k)
                        g_theta, g_b = torch.autograd.grad(f0, (theta, b))
                    theta, b = theta.detach(), b.detach()
                    g2 = float((g_theta**2).sum() + g_b**2)
                    if g2 == 0.0:
                        break
                    with torch.no_grad():
                        while lr > 1e-12:
                            t_new, b_new = theta - lr * g_theta, b - lr * g_b
                            if float(objective(t_new, b_new, k)) <= float(f0) - 0.5 * lr * g2:
                                theta, b = t_new, b_new
                                lr *= 2.0
                                break
                            lr *= 0.5
                bias = b
                with torch.no_grad():
                    a_new, b_new, _, _ = split(theta, 2, max_bond=max_bond, cutoff=cutoff, absorb=absorb)
                    cores[k], cores[k + 1] = a_new, b_new
                    values = _quadratic_form(xn, cores, order, self._use_dense()) + bias
                    pred = values if idx is None else sum_by_structure(values, idx, n_structures)
                    centre = cores[k + 1] if absorb == "right" else cores[k]
                    history.append(float(((pred - yn) ** 2).mean() + ridge * (centre**2).sum()))
        for k, core in enumerate(cores):
            self.cores[k] = nn.Parameter(core.contiguous())
        self.bias.data = bias.reshape(()).to(self.bias.dtype)
        return history


def _quadratic_form(xn: torch.Tensor, cores: Sequence[torch.Tensor], order: Sequence[int], dense: bool
                    ) -> torch.Tensor:
    """``<x|T|x>`` per row for ``xn: (rows, *dims)`` (descriptor order) and MPO cores in site order.

    A core may span two neighbouring sites (a merged block with legs fused as (o o', i i')):
    fusing neighbours keeps the row-major order of the flattened operator.
    """
    rows = xn.shape[0]
    xs = xn.permute(0, *[1 + p for p in order]).reshape(rows, -1)  # [rows, P] site order
    op = MPO(list(cores))
    if dense:
        t = op.to_matrix()  # [P, P] (out, in)
        return ((xs @ t.T) * xs).sum(1)
    return (op.apply(xs) * xs).sum(1)


# ------------------------------------------------------------------------------------ TTN / MERA
class _TreeNetwork(DescriptorModel):
    """Binary tree over the sites (in ``site_order``): each level pairs neighbouring legs
    ``(0,1), (2,3), ...`` with isometries ``(d_a, d_b, min(chi, d_a d_b))`` (a leftover leg is
    passed up); the last pair maps to a scalar. With ``disentangle`` (MERA) every level of three
    or more legs first applies disentanglers ``(d_a, d_b, d_a, d_b)`` to the pairs straddling
    the isometry blocks, ``(1,2), (3,4), ...`` (Vidal, PRL 99, 220405; Fig. 29c).

    The tensors are unconstrained parameters (trained by Adam like every model of the paper),
    initialised as random isometries and near-identity disentanglers.
    """

    config_class = TreeConfig
    disentangle: ClassVar[bool] = False

    def __init__(self, config: TreeConfig):
        super().__init__(config)
        gen = torch.Generator().manual_seed(config.seed)
        legs = [config.dims[p] for p in config.site_order]
        tensors: list[torch.Tensor] = []
        self._layers: list[list[tuple[str, int, int]]] = []
        while len(legs) > 1:
            ops: list[tuple[str, int, int]] = []
            if self.disentangle and len(legs) > 2:
                for i in range(1, len(legs) - 1, 2):
                    da, db = legs[i], legs[i + 1]
                    u = torch.eye(da * db, dtype=torch.float64)
                    u = u + 0.1 * torch.randn(da * db, da * db, generator=gen, dtype=torch.float64) / math.sqrt(da * db)
                    ops.append(("dis", i, len(tensors)))
                    tensors.append(u.reshape(da, db, da, db))  # (in_a, in_b, out_a, out_b)
            isos, new_legs, i = [], [], 0
            while i < len(legs):
                if i + 1 < len(legs):
                    da, db = legs[i], legs[i + 1]
                    c = 1 if len(legs) == 2 else min(config.chi, da * db)
                    q, _ = torch.linalg.qr(torch.randn(da * db, c, generator=gen, dtype=torch.float64))
                    isos.append(("iso", i, len(tensors)))
                    tensors.append(q.reshape(da, db, c))  # (in_a, in_b, out)
                    new_legs.append(c)
                    i += 2
                else:
                    new_legs.append(legs[i])
                    i += 1
            ops.extend(reversed(isos))  # right to left: earlier positions stay valid
            self._layers.append(ops)
            legs = new_legs
        self.tensors = nn.ParameterList([nn.Parameter(t.to(self.dtype)) for t in tensors])
        self.bias = nn.Parameter(torch.zeros((), dtype=self.dtype))

    @property
    def site_order(self) -> list[int]:
        return list(self.config.site_order)

    def _contract(self, xs: torch.Tensor) -> list[torch.Tensor]:
        """Contract ``xs: (rows, *site_dims)`` level by level; returns the state after each level,
        ``(rows, *legs)``; the last one is ``(rows, 1)``."""
        states = []
        state = xs
        for ops in self._layers:
            for kind, pos, t_index in ops:
                t = self.tensors[t_index]
                rows, legs = state.shape[0], tuple(state.shape[1:])
                pre, post = math.prod(legs[:pos]), math.prod(legs[pos + 2:])
                s = state.reshape(rows, pre, legs[pos], legs[pos + 1], post)
                if kind == "dis":
                    s = torch.einsum("zpabq,abcd->zpcdq", s, t)  # [rows, pre, d_a, d_b, post]
                    new_legs = legs
                else:
                    s = torch.einsum("zpabq,abc->zpcq", s, t)  # [rows, pre, c, post]
                    new_legs = legs[:pos] + (t.shape[2],) + legs[pos + 2:]
                state = s.reshape(rows, *new_legs)
            states.append(state)
        return states

    def _use_dense(self) -> bool:
        mode = self.config.contraction
        return mode == "dense" or (mode == "auto" and self.n_features <= _DENSE_LIMIT)

    def weight_tensor(self) -> torch.Tensor:
        """Dense weight tensor ``(*dims)`` in descriptor order (differentiable), contracted top-down:
        starting from the root's output leg, every operation is undone in reverse order, an
        isometry expanding one leg ``c`` into ``(d_a, d_b)``, a disentangler mapping ``(c, d)`` back
        to ``(a, b)``."""
        w = torch.ones(1, dtype=self.dtype, device=self.input_mean.device)  # the root's output leg
        for ops in reversed(self._layers):
            for kind, pos, t_index in reversed(ops):
                t = self.tensors[t_index]
                legs = tuple(w.shape)
                pre = math.prod(legs[:pos])
                if kind == "iso":
                    w = torch.einsum("pcq,abc->pabq", w.reshape(pre, legs[pos], -1), t)
                    w = w.reshape(*legs[:pos], t.shape[0], t.shape[1], *legs[pos + 1:])
                else:
                    w = torch.einsum("pcdq,abcd->pabq", w.reshape(pre, legs[pos], legs[pos + 1], -1), t)
                    w = w.reshape(legs)
        return _to_original_order(w, self.config.site_order)

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        if self._use_dense():
            return xn.reshape(xn.shape[0], -1) @ self.weight_tensor().reshape(-1) + self.bias
        xs = xn.permute(0, *[1 + p for p in self.config.site_order])
        return self._contract(xs)[-1].reshape(-1) + self.bias

    @torch.no_grad()
    def hidden_states(self, x) -> list[torch.Tensor]:
        """Latent representation of every hidden level (isometry outputs), ``(batch, features)``
        each, for normalised inputs of ``x: (batch, *dims)``; the final scalar level is excluded."""
        x = self.check_input(x)
        xs = self.normalize_inputs(x).permute(0, *[1 + p for p in self.config.site_order])
        return [s.reshape(s.shape[0], -1) for s in self._contract(xs)[:-1]]

    @torch.no_grad()
    def state_tensor(self) -> torch.Tensor:
        """Dense learned state with one leg per descriptor index (descriptor order), float64."""
        return self.weight_tensor().detach().to(torch.float64)


@register_model
class TTNRegressor(_TreeNetwork):
    """Binary tree tensor network ``y = <TTN|B> + b`` (Shi, Duan & Vidal 2006; Fig. 29b)."""


@register_model
class MERARegressor(_TreeNetwork):
    """Binary MERA ``y = <MERA|B> + b``: disentanglers + isometries per level (Fig. 29c)."""

    disentangle = True


# ----------------------------------------------------------------------- Stoudenmire–Schwab MPS
@register_model
class FeatureMapMPS(DescriptorModel):
    """Stoudenmire & Schwab MPS on the flattened descriptor (Fig. 11).

    Each feature, scaled to [0, 1] by the training minimum and maximum (features outside the
    training range map outside [0, 1]; constant features map to 0), is embedded as
    ``phi(x) = [1 - x, x]`` (eq. 19) and the product state is contracted with an MPS of ``N =
    prod(dims)`` sites of dimension 2 and bond ``chi``:

        raw = l^T A_1[phi(x_1)] A_2[phi(x_2)] ... A_N[phi(x_N)] r + b.

    The cores start as the identity plus Gaussian noise: since ``(1 - x) + x = 1`` every site
    then maps the environment to itself and the product of ``N`` matrices stays O(1).

    Buffers ``feature_min``/``feature_max`` (*dims) replace the mean/scale normalisation.
    """

    config_class = FeatureMapConfig

    def __init__(self, config: FeatureMapConfig):
        super().__init__(config)
        n, chi = self.n_features, config.chi
        gen = torch.Generator().manual_seed(config.seed)
        cores = torch.eye(chi, dtype=torch.float64).reshape(1, chi, 1, chi).repeat(n, 1, 2, 1)
        cores = cores + config.init_noise * torch.randn(n, chi, 2, chi, generator=gen, dtype=torch.float64)
        self.cores = nn.Parameter(cores.to(self.dtype))  # (N, chi, 2, chi)
        boundary = torch.zeros(chi, dtype=torch.float64)
        boundary[0] = 1.0
        self.left = nn.Parameter(boundary.clone().to(self.dtype))  # (chi,)
        self.right = nn.Parameter(boundary.clone().to(self.dtype))  # (chi,)
        self.bias = nn.Parameter(torch.zeros((), dtype=self.dtype))
        self.register_buffer("feature_min", torch.zeros(config.dims, dtype=self.dtype))
        self.register_buffer("feature_max", torch.ones(config.dims, dtype=self.dtype))

    def _fit_input_normalization(self, x: torch.Tensor) -> None:
        self.feature_min.copy_(x.min(0).values)
        self.feature_max.copy_(x.max(0).values)

    def normalize_inputs(self, x: torch.Tensor) -> torch.Tensor:
        span = self.feature_max - self.feature_min
        span = torch.where(span > 0, span, torch.ones_like(span))
        return (x - self.feature_min) / span  # [batch, *dims] in [0, 1] on the training data

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        rows, chi = xn.shape[0], self.config.chi
        feats = xn.reshape(rows, -1)  # [rows, N]
        env = self.left.expand(rows, chi)  # [rows, chi]
        for k in range(feats.shape[1]):
            t = (env @ self.cores[k].reshape(chi, 2 * chi)).reshape(rows, 2, chi)  # [rows, s, chi]
            xk = feats[:, k:k + 1]
            env = (1.0 - xk) * t[:, 0] + xk * t[:, 1]
        return env @ self.right + self.bias

    @torch.no_grad()
    def to_mps(self) -> MPS:
        """The weight state over the ``N`` binary sites as an :class:`entangle.tn.MPS` (boundary
        vectors absorbed into the first and last cores)."""
        cores = [c for c in self.cores.detach()]
        if len(cores) == 1:
            return MPS([torch.einsum("a,asb,b->s", self.left, cores[0], self.right).reshape(1, 2, 1)])
        first = torch.einsum("a,asb->sb", self.left, cores[0]).unsqueeze(0)
        last = torch.einsum("asb,b->as", cores[-1], self.right).unsqueeze(-1)
        return MPS([first, *cores[1:-1], last])

    @torch.no_grad()
    def bond_entropies(self) -> torch.Tensor:
        """Entropies (nats) across the ``N - 1`` bonds of the feature MPS."""
        return self.to_mps().to(torch.float64).entropies()


# ------------------------------------------------------------------------------------ training
@dataclass
class TrainHistory:
    """Loss curves (MSE in normalised target units) of :func:`fit_model`."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    stopped_early: bool = False


class _Rows:
    """Descriptor rows with per-structure targets; rows are structures or atoms.

    ``normalized`` marks rows already mapped by the model's (fixed) input normalisation, so that
    training does not renormalise the same data every step.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None, n_structures: int,
                 normalized: bool = False):
        self.x, self.y, self.idx, self.n_structures, self.normalized = x, y, idx, n_structures, normalized

    def subset(self, structures: torch.Tensor) -> _Rows:
        if self.idx is None:
            return _Rows(self.x[structures], self.y[structures], None, structures.shape[0], self.normalized)
        position = torch.full((self.n_structures,), -1, dtype=torch.long, device=self.idx.device)
        position[structures] = torch.arange(structures.shape[0], device=self.idx.device)
        new_index = position[self.idx]
        keep = new_index >= 0
        return _Rows(self.x[keep], self.y[structures], new_index[keep], structures.shape[0], self.normalized)

    def normalize(self, model: DescriptorModel) -> _Rows:
        with torch.no_grad():
            return _Rows(model.normalize_inputs(self.x), self.y, self.idx, self.n_structures, True)

    def loss(self, model: DescriptorModel, kind: str = "mse", delta: float = 0.1) -> torch.Tensor:
        """Mean loss of the normalised residuals ``(pred - y) / target_scale``: squared
        (``"mse"``) or Huber with threshold ``delta`` (``"huber"``)."""
        if self.normalized:
            values = model.target_scale * model.raw(self.x) + model.target_shift  # [rows]
            pred = values if self.idx is None else sum_by_structure(values, self.idx, self.n_structures)
        else:
            pred = model._forward_checked(self.x, self.idx, self.n_structures)
        return _loss((pred - self.y) / model.target_scale, kind, delta)


_LOSSES = ("mse", "huber")
_OPTIMIZERS = ("adam", "lbfgs")


def _loss(residual: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    if kind == "mse":
        return (residual**2).mean()
    return torch.nn.functional.huber_loss(residual, torch.zeros_like(residual), delta=delta)


def _prepare(model: DescriptorModel, x, y, structure_index, n_structures) -> _Rows:
    x = model.check_input(x)
    idx = None
    if structure_index is None:
        n_structures = x.shape[0]
    else:
        idx, n_structures = _check_structure_index(structure_index, x.shape[0], n_structures)
        idx = idx.to(x.device)
    y = check_targets(y, n_structures).to(model.dtype).to(x.device)
    return _Rows(x, y, idx, n_structures)


def fit_model(model: DescriptorModel, x, y, structure_index=None, n_structures: int | None = None, *,
              validation: tuple | None = None, val_fraction: float = 0.2, epochs: int = 500, lr: float = 1e-2,
              batch_size: int | None = None, patience: int = 50, weight_decay: float = 0.0, seed: int = 0,
              normalize: bool = True, callback: Callable[[DescriptorModel, int], None] | None = None,
              progress: bool = False, optimizer: str = "adam", loss: str = "mse", huber_delta: float = 0.1,
              lbfgs_iterations: int = 10) -> TrainHistory:
    """Train a descriptor model with Adam or L-BFGS and early stopping (best validation weights restored).

    Parameters
    ----------
    model : any :class:`DescriptorModel` (parameters of fixed shape).
    x : (n_rows, *dims) descriptors; y : (n_structures,) targets; structure_index : (n_rows,)
        structure of each row for per-atom inputs (None: rows are structures).
    validation : ``(x_val, y_val)`` or ``(x_val, y_val, structure_index_val)``; if None,
        ``val_fraction`` of the structures (random, ``seed``) are held out. With neither
        (``val_fraction=0``), the training loss is monitored.
    epochs, lr, batch_size (structures per step; None = full batch), patience (epochs without
        validation improvement), weight_decay : optimiser settings.
    normalize : set input/target normalisation from the training split first.
    callback : called as ``callback(model, epoch)`` after every epoch (e.g. an
        :class:`entangle.analysis.EntanglementTracker`).
    progress : show a tqdm progress bar.
    optimizer : ``"adam"`` (mini-batches of ``batch_size``) or ``"lbfgs"`` (full batch, strong
        Wolfe line search; one "epoch" is ``lbfgs_iterations`` L-BFGS iterations, ``lr`` and
        ``batch_size`` are not used; ``weight_decay`` is added as ``weight_decay * ||params||^2``).
        On small data sets and small models L-BFGS converges in far fewer passes than Adam.
    loss : ``"mse"`` or ``"huber"`` (threshold ``huber_delta`` in units of the target std): the
        Huber loss limits the pull of the few structures with very large errors, which lowers the
        MAE. The monitored validation quantity is the same loss. With L-BFGS the starting
        weights count as epoch -1, so a warm start (:func:`linear_warm_start`) is never made worse.
    """
    for name, value, low in (("epochs", epochs, 1), ("patience", patience, 1), ("seed", seed, 0)):
        if not _is_int(value) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise ConfigError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{type(model).__name__} has no trainable parameters; fit it with its own fit method")
    if optimizer not in _OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if loss not in _LOSSES:
        raise ConfigError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if not (huber_delta > 0 and math.isfinite(huber_delta)):
        raise ConfigError(f"huber_delta must be a positive number, got {huber_delta}")
    if not _is_int(lbfgs_iterations) or lbfgs_iterations < 1:
        raise ConfigError(f"lbfgs_iterations must be an integer >= 1, got {lbfgs_iterations!r}")
    data = _prepare(model, x, y, structure_index, n_structures)
    gen = torch.Generator().manual_seed(seed)
    if validation is not None:
        train = data
        if len(validation) not in (2, 3):
            raise ConfigError(f"validation must be (x, y) or (x, y, structure_index), got {len(validation)} items")
        val = _prepare(model, validation[0], validation[1], validation[2] if len(validation) == 3 else None, None)
    elif val_fraction > 0 and data.n_structures >= 2:
        perm = torch.randperm(data.n_structures, generator=gen).to(data.y.device)
        n_val = min(max(1, round(val_fraction * data.n_structures)), data.n_structures - 1)
        val, train = data.subset(perm[:n_val]), data.subset(perm[n_val:])
    else:
        train, val = data, None
    if normalize:
        model.set_normalization(train.x, train.y, train.idx, train.n_structures)
    train = train.normalize(model)  # the input normalisation is fixed during training
    val = None if val is None else val.normalize(model)
    if optimizer == "lbfgs":
        return _fit_lbfgs(model, train, val, epochs, patience, weight_decay, loss, huber_delta, lbfgs_iterations,
                          callback, progress)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = TrainHistory()
    best_state = copy.deepcopy(model.state_dict())
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs_iter = tqdm(epochs_iter, desc=type(model).__name__, unit="epoch")
    step = batch_size or train.n_structures
    for epoch in epochs_iter:
        model.train()
        order = torch.randperm(train.n_structures, generator=gen).to(train.y.device)
        total, seen = 0.0, 0
        for start in range(0, train.n_structures, step):
            batch = train if step >= train.n_structures else train.subset(order[start:start + step])
            optimizer.zero_grad()
            value = batch.loss(model, loss, huber_delta)
            value.backward()
            optimizer.step()
            total += float(value.detach()) * batch.n_structures
            seen += batch.n_structures
        model.eval()
        history.train_loss.append(total / seen)
        with torch.no_grad():
            monitored = float((val if val is not None else train).loss(model, loss, huber_delta))
        history.val_loss.append(monitored)
        if callback is not None:
            callback(model, epoch)
        best_state, stop = _keep_best(history, model, monitored, epoch, patience, best_state)
        if stop:
            break
        if progress:
            epochs_iter.set_postfix(train=f"{history.train_loss[-1]:.3g}", val=f"{monitored:.3g}")
    model.load_state_dict(best_state)
    return history


def _keep_best(history: TrainHistory, model: DescriptorModel, monitored: float, epoch: int, patience: int,
               best_state: dict) -> tuple[dict, bool]:
    """Early-stopping bookkeeping of one epoch: returns the weights to keep and whether to stop."""
    if monitored < history.best_val_loss:
        history.best_val_loss, history.best_epoch = monitored, epoch
        return copy.deepcopy(model.state_dict()), False
    if epoch - history.best_epoch >= patience:
        history.stopped_early = True
        return best_state, True
    return best_state, False


def _fit_lbfgs(model: DescriptorModel, train: _Rows, val: _Rows | None, epochs: int, patience: int,
               weight_decay: float, loss: str, delta: float, iterations: int,
               callback: Callable[[DescriptorModel, int], None] | None, progress: bool) -> TrainHistory:
    """Full-batch L-BFGS part of :func:`fit_model` (normalised rows; early stopping per epoch of
    ``iterations`` L-BFGS iterations, the starting weights scored as epoch -1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=20, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")
    monitor = val if val is not None else train
    history = TrainHistory()
    model.eval()  # no dropout: L-BFGS needs a deterministic objective

    def closure():
        optimizer.zero_grad()
        value = train.loss(model, loss, delta)
        if weight_decay:
            value = value + weight_decay * sum((p**2).sum() for p in params)
        value.backward()
        return value

    with torch.no_grad():
        history.best_val_loss = float(monitor.loss(model, loss, delta))
    best_state = copy.deepcopy(model.state_dict())
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs_iter = tqdm(epochs_iter, desc=f"{type(model).__name__} (L-BFGS)", unit="epoch")
    for epoch in epochs_iter:
        value = float(optimizer.step(closure).detach())
        with torch.no_grad():
            history.train_loss.append(float(train.loss(model, loss, delta)))
            monitored = float(monitor.loss(model, loss, delta))
        history.val_loss.append(monitored)
        if callback is not None:
            callback(model, epoch)
        if not math.isfinite(monitored) or not math.isfinite(value):
            break
        best_state, stop = _keep_best(history, model, monitored, epoch, patience, best_state)
        if stop:
            break
        if progress:
            epochs_iter.set_postfix(train=f"{history.train_loss[-1]:.3g}", val=f"{monitored:.3g}")
    model.load_state_dict(best_state)
    return history


def _distinct_columns(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct columns of ``keys: (n, P)``: ``(distinct (Q, n), first column of each (Q,),
    inverse (P,), multiplicity (Q,))``."""
    distinct, inverse, counts = torch.unique(keys.T, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((distinct.shape[0],), keys.shape[1], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(keys.shape[1]), reduce="amin")
    return distinct, first, inverse, counts


@torch.no_grad()
def linear_warm_start(model: DescriptorModel, x, y, *, ridge: float = 1e-3, loss: str = "mse",
                      huber_delta: float = 0.1, iterations: int = 30) -> dict[str, float]:
    """Set ``model``'s normalisation from ``(x, y)`` and its linear part to the convex optimum.

    Solves ``min_{w,b} mean L(xn·w + b - yn) + ridge * v * ||w||^2`` over a dense weight tensor
    ``w`` (``xn``, ``yn``: the model's normalised inputs and targets; ``v`` the mean variance of
    the entries of ``xn``, so ``ridge`` is the ordinary ridge weight of standardised features;
    ``L`` squared or Huber, the latter by iteratively reweighted least squares, ``iterations``
    steps). Then ``w`` is loaded into the model: for an :class:`MPSRegressor` as the TT-SVD of
    ``w`` truncated to the bond dimension ``chi`` (exact when ``chi`` reaches the full rank of
    every cut, e.g. ``chi = 16`` for ``[4, 4, 4, 4, 4]``); for an :class:`MPORegressor` with
    ``linear_chi > 0`` into its linear term (the operator ``T`` is scaled by 0.1 so that the
    quadratic part starts as a small correction); for a :class:`DenseTensorRegressor` directly.
    Rows are structures (no per-atom inputs).

    Returns
    -------
    ``{"ridge": ..., "discarded": ||w - W_trunc|| / ||w||}``.
    """
    if not (ridge >= 0 and math.isfinite(ridge)):
        raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}")
    if loss not in _LOSSES:
        raise ConfigError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if isinstance(model, MPORegressor) and not model.config.linear_chi:
        raise ConfigError("linear_warm_start needs an MPORegressor with linear_chi > 0")
    if not isinstance(model, (MPSRegressor, MPORegressor, DenseTensorRegressor)):
        raise ConfigError(f"linear_warm_start supports MPS, MPO (linear_chi > 0) and dense models, "
                          f"not {type(model).__name__}")
    model.set_normalization(x, y)
    x = model.check_input(x).to(torch.float64)
    y = check_targets(y, x.shape[0]).to(torch.float64)
    xn = ((x - model.input_mean.double()) / model.input_scale.double()).reshape(x.shape[0], -1)  # [n, P]
    yn = (y - float(model.target_shift)) / float(model.target_scale)
    n, p = xn.shape
    # Columns that are identical on the training rows (the power spectrum is symmetric under
    # (alpha1, n1) <-> (alpha2, n2): 544 distinct entries of 1024) share one coefficient u_k:
    # the ridge optimum splits it evenly, w_j = u_k / m_k, with penalty ridge * u_k^2 / m_k.
    # Solving for u is exact and about 3.5x cheaper.
    # (equal up to rounding: keys quantised at 1e-9 of the largest entry)
    step = 1e-9 * max(float(xn.abs().max()), 1e-300)
    _, first, inverse, multiplicity = _distinct_columns(torch.round(xn / step))
    distinct = xn[:, first].T
    q = distinct.shape[0]
    a = torch.cat([distinct.T, torch.ones(n, 1, dtype=torch.float64)], 1)  # [n, Q+1]
    penalty = torch.zeros(q + 1, dtype=torch.float64)
    penalty[:q] = ridge * float(xn.var(0).mean()) / multiplicity.to(torch.float64)  # the bias is not regularised
    weights = torch.ones(n, dtype=torch.float64)
    sol = None
    for _ in range(iterations if loss == "huber" else 1):  # iteratively reweighted least squares
        gram = (a * weights[:, None]).T @ a / n + torch.diag(penalty)
        rhs = (a * weights[:, None]).T @ yn / n
        try:
            new = torch.linalg.solve(gram, rhs)
        except RuntimeError:
            new = torch.linalg.lstsq(gram, rhs.unsqueeze(1), driver="gelsd").solution[:, 0]
        converged = sol is not None and float((new - sol).norm()) <= 1e-6 * float(new.norm())
        sol = new
        if converged:
            break
        residual = (a @ sol - yn).abs()
        weights = torch.where(residual <= huber_delta, torch.ones_like(residual),
                              huber_delta / residual.clamp_min(1e-300))
    w = (sol[:q] / multiplicity.to(torch.float64))[inverse].reshape(model.dims)
    b = float(sol[q])
    order = getattr(model.config, "site_order", None)
    if isinstance(model, DenseTensorRegressor):
        model.weight.copy_(w.to(model.dtype))
        model.bias.fill_(b)
        return {"ridge": ridge, "discarded": 0.0}
    ws = w.permute(*order)  # site order
    if isinstance(model, MPSRegressor):
        psi, discarded = MPS.from_dense(ws, max_bond=model.config.chi)
        target = model.cores
    else:
        psi, discarded = MPS.from_dense(ws, max_bond=model.config.linear_chi)
        target = model.linear_cores
        for core in model.cores:
            core.mul_(0.1 ** (1.0 / len(model.cores)))
    for k, core in enumerate(psi.cores):  # zero-pad to the configured bonds (same tensor, same shapes)
        padded = torch.zeros_like(target[k])
        padded[: core.shape[0], :, : core.shape[2]] = core.to(model.dtype)
        target[k].copy_(padded)
    model.bias.fill_(b)
    return {"ridge": ridge, "discarded": float(discarded) / max(float(w.norm()), 1e-300)}
