"""NN-MPO potential energy surface: a tensor train over learned latent coordinates.

Hino & Kurashige, *Neural network matrix product operator*, arXiv:2410.23858, Sec. II.A:

    V(x) = norm · Σ_ρ φ_ρ1(q_1) … φ_ρf(q_f) W1[1,ρ1,β1] W2[β1,ρ2,β2] … Wf[β_{f-1},ρf,1]     (eq. 4)
    q = x U,  U ∈ St(f, n) = {U ∈ R^{n×f} : UᵀU = I_f}                                     (eq. 2)
    φ_0 = 1,  φ_ρ(q_i) = a_ρ(w_ρ^(i) (q_i − q̄_ρ^(i)) + b_ρ^(i)),  q̄ = x0 U                  (eq. 3)

``x`` are mass-weighted coordinates (n of them), ``x0`` are ``N − 1`` reference points (usually
drawn from the training set) whose projections are the centres of the basis functions; they follow
``U`` automatically because ``q̄`` is recomputed from ``x0`` on every call. Forces
``F = −∂V/∂x = −(∂V/∂q) Uᵀ`` are evaluated analytically through the tensor train: with left
environments ``L_k`` (cores 1..k−1 contracted with φ) and right environments ``R_k``,
``∂V/∂q_k = norm · L_k (∂φ^(k) · W_k) R_{k+1}``. The DVR form of the potential MPO used for
vibrational DMRG only needs :attr:`NNMPO.cores` and :meth:`NNMPO.basis_values`:
``𝒲_k[β, σ, σ, β'] = Σ_ρ W_k[β, ρ, β'] φ_ρ(Q_σ)`` (multiply the first core by :attr:`NNMPO.norm`).

``NNMPO`` is registered with :mod:`entangle.io`: ``entangle.io.save(model, "run/model")`` and
``entangle.io.load("run")`` round-trip it; its config records the actual bond dimensions.

>>> import torch
>>> from entangle.models.nnmpo import NNMPO, NNMPOConfig
>>> model = NNMPO(NNMPOConfig(n_coords=3, n_latent=3, n_basis=5, bond_dims=[2, 2], seed=0))
>>> energy, forces = model.energy_and_forces(torch.zeros(4, 3, dtype=torch.float64))
>>> energy.shape, forces.shape
(torch.Size([4]), torch.Size([4, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.io import DTYPES, register_model
from entangle.tn.tensor_train import check_train_cores

__all__ = ["ACTIVATIONS", "NNMPOConfig", "NNMPO", "activation_and_derivative"]


def _moderate(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # a(t) = 1 − exp(−t²) + 0.05 t²: Gaussian-like well that keeps growing (paper Sec. II.A)
    g = torch.exp(-t * t)
    return 1.0 - g + 0.05 * t * t, 2.0 * t * g + 0.1 * t


def _silu(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.sigmoid(t)
    return t * s, s + t * s * (1.0 - s)


def _tanh(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.tanh(t)
    return h, 1.0 - h * h


def _exp_abs(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = torch.exp(-t.abs())
    return e, -torch.sign(t) * e


def _gaussian(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # −exp(−t²)
    g = torch.exp(-t * t)
    return -g, 2.0 * t * g


def _erf(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.erf(t), (2.0 / math.sqrt(math.pi)) * torch.exp(-t * t)


def _softplus(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.functional.softplus(t), torch.sigmoid(t)


#: activation families a(t) -> (a(t), a'(t))
ACTIVATIONS = {
    "moderate": _moderate,
    "silu": _silu,
    "tanh": _tanh,
    "exp": _exp_abs,
    "gaussian": _gaussian,
    "erf": _erf,
    "softplus": _softplus,
}


def activation_and_derivative(name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and derivative of one activation family at ``t`` (any shape)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](t)


@dataclass
class NNMPOConfig:
    """Hyperparameters that fully rebuild an :class:`NNMPO`.

    Parameters
    ----------
    n_coords : n, number of input (mass-weighted) coordinates.
    n_latent : f <= n, number of latent coordinates (= tensor-train sites).
    n_basis : N >= 2, basis functions per latent coordinate (one constant + N−1 activations).
    activation : ``"+"``-joined families from :data:`ACTIVATIONS`; the N−1 non-constant functions
        are split into equal consecutive blocks (first blocks take the remainder), e.g.
        ``"moderate+silu"``.
    bond_dims : the f−1 inner bond dimensions (D_1..D_{f−1}); if None, ``max_bond`` everywhere
        (capped by the full rank of each cut).
    max_bond : used when ``bond_dims`` is None.
    seed : seeds the initial cores, w and the choice of nothing else (centres x0 are a buffer
        set by the caller, zeros by default).
    dtype : ``"float64"`` or ``"float32"``.
    w_init : half-width of the uniform initial distribution of w.
    """

    n_coords: int
    n_latent: int
    n_basis: int
    activation: str = "moderate+silu"
    bond_dims: list[int] | None = None
    max_bond: int = 4
    seed: int = 0
    dtype: str = "float64"
    w_init: float = 0.5
    families: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("n_coords", "n_latent", "n_basis", "max_bond", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"NNMPOConfig.{name} must be an integer, got {value!r}")
        if self.n_coords < 1:
            raise ConfigError(f"NNMPOConfig.n_coords must be >= 1, got {self.n_coords}")
        if not 1 <= self.n_latent <= self.n_coords:
            raise ConfigError(f"NNMPOConfig.n_latent must be in [1, n_coords={self.n_coords}], got {self.n_latent}")
        if self.n_basis < 2:
            raise ConfigError(f"NNMPOConfig.n_basis must be >= 2, got {self.n_basis}")
        if self.max_bond < 1:
            raise ConfigError(f"NNMPOConfig.max_bond must be >= 1, got {self.max_bond}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"NNMPOConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not (self.w_init > 0 and math.isfinite(self.w_init)):
            raise ConfigError(f"NNMPOConfig.w_init must be a positive number, got {self.w_init}")
        names = self.activation.split("+")
        for name in names:
            if name not in ACTIVATIONS:
                raise ConfigError(f"NNMPOConfig.activation: unknown family {name!r}; choose from {sorted(ACTIVATIONS)}")
        if len(names) > self.n_basis - 1:
            raise ConfigError(f"NNMPOConfig.activation has {len(names)} families but only {self.n_basis - 1} "
                              "non-constant basis functions")
        if self.bond_dims is not None:
            self.bond_dims = [int(d) for d in self.bond_dims]
            if len(self.bond_dims) != self.n_latent - 1:
                raise ConfigError(f"NNMPOConfig.bond_dims needs n_latent-1 = {self.n_latent - 1} entries, "
                                  f"got {len(self.bond_dims)}")
            if any(d < 1 for d in self.bond_dims):
                raise ConfigError(f"NNMPOConfig.bond_dims must all be >= 1, got {self.bond_dims}")
        base, extra = divmod(self.n_basis - 1, len(names))
        self.families = [name for i, name in enumerate(names) for _ in range(base + (1 if i < extra else 0))]

    def bonds(self) -> list[int]:
        """All f+1 bond dimensions, ``[1, D_1, ..., D_{f−1}, 1]``."""
        if self.bond_dims is not None:
            return [1, *self.bond_dims, 1]
        f, n = self.n_latent, self.n_basis
        return [1] + [min(self.max_bond, n ** k, n ** (f - k)) for k in range(1, f)] + [1]

    def to_dict(self) -> dict:
        """JSON-serialisable constructor arguments."""
        d = asdict(self)
        d.pop("families")
        return d


@register_model
class NNMPO(nn.Module):
    """Neural-network matrix product operator potential (Hino & Kurashige 2024, eqs. 2–4).

    Parameters
    ----------
    config : :class:`NNMPOConfig`.

    Attributes
    ----------
    U : (n, f) parameter, orthonormal columns (initialised to ``eye(n, f)``).
    w, b : (f, N−1) parameters of the basis functions (``w ~ U[−w_init, w_init]``, ``b = 0``).
    cores : f parameters, core k of shape (D_{k−1}, N, D_k).
    x0 : (N−1, n) buffer, reference points whose projections ``x0 U`` are the centres q̄.
    norm : 0-dim buffer, overall scale of the energy (eV when trained on eV).
    """

    def __init__(self, config: NNMPOConfig):
        super().__init__()
        bonds = config.bonds()
        # a copy that records the actual bond dimensions, so that entangle.io can rebuild the shapes
        config = replace(config, bond_dims=bonds[1:-1])
        self.config = config
        dtype = DTYPES[config.dtype]
        n, f, nb = config.n_coords, config.n_latent, config.n_basis
        gen = torch.Generator().manual_seed(config.seed)
        self.U = nn.Parameter(torch.eye(n, f, dtype=dtype))  # (n, f)
        w = (2.0 * torch.rand(f, nb - 1, generator=gen, dtype=torch.float64) - 1.0) * config.w_init
        self.w = nn.Parameter(w.to(dtype))  # (f, N-1)
        self.b = nn.Parameter(torch.zeros(f, nb - 1, dtype=dtype))  # (f, N-1)
        cores = []
        for k in range(f):
            # near-constant start: the constant basis function carries an identity-like path
            core = 1e-2 * torch.randn(bonds[k], nb, bonds[k + 1], generator=gen, dtype=torch.float64)
            m = min(bonds[k], bonds[k + 1])
            core[torch.arange(m), 0, torch.arange(m)] += 1.0
            cores.append(nn.Parameter(core.to(dtype)))
        self.cores = nn.ParameterList(cores)
        self.register_buffer("x0", torch.zeros(nb - 1, n, dtype=dtype))  # (N-1, n)
        self.register_buffer("norm", torch.ones((), dtype=dtype))
        self._families = config.families
        blocks, start = [], 0
        for name in dict.fromkeys(config.families):
            count = config.families.count(name)
            blocks.append((name, start, start + count))
            start += count
        self._blocks = blocks

    @classmethod
    def from_config(cls, config: NNMPOConfig | dict) -> NNMPO:
        """Rebuild from an :class:`NNMPOConfig` or its dict form (as stored by :func:`entangle.io.save`;
        the derived ``families`` entry is accepted and recomputed)."""
        if isinstance(config, dict):
            config = dict(config)
            config.pop("families", None)
            names = {f.name for f in fields(NNMPOConfig) if f.init}
            unknown = set(config) - names
            if unknown:
                raise ConfigError(f"unknown NNMPO config keys: {sorted(unknown)}; allowed {sorted(names)}")
            missing = {"n_coords", "n_latent", "n_basis"} - set(config)
            if missing:
                raise ConfigError(f"NNMPO config is missing {sorted(missing)}")
            config = NNMPOConfig(**config)
        elif not isinstance(config, NNMPOConfig):
            raise ConfigError(f"NNMPO.from_config needs an NNMPOConfig or a dict, got {type(config).__name__}")
        return cls(config)

    # ----------------------------------------------------------------------------------- checks
    @property
    def n_coords(self) -> int:
        return self.config.n_coords

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def bond_dims(self) -> list[int]:
        """Current inner bond dimensions (they change when sweeps grow or truncate bonds)."""
        return [int(c.shape[2]) for c in self.cores[:-1]]

    def num_parameters(self) -> int:
        """Trainable parameters: TT cores + U (n·f) + w, b (2·f·(N−1)) + the scalar norm."""
        return sum(c.numel() for c in self.cores) + self.U.numel() + self.w.numel() + self.b.numel() + 1

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise :class:`ShapeError`/:class:`DataError` for a batch ``x`` that is not (B, n) finite."""
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.n_coords:
            raise ShapeError(f"{name} must have shape (n_points, {self.n_coords}), got {tuple(x.shape)}")
        if x.dtype != self.U.dtype:
            raise DataError(f"dtype {x.dtype} does not match the model's {self.U.dtype}", field=name)
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            raise DataError("non-finite coordinate", index=int(torch.nonzero(bad)[0, 0]), field=name)

    def set_centres(self, x0: torch.Tensor) -> None:
        """Set the reference points x0 (N−1, n) whose projections are the basis centres."""
        if x0.shape != self.x0.shape:
            raise ShapeError(f"x0 must have shape {tuple(self.x0.shape)}, got {tuple(x0.shape)}")
        if not torch.isfinite(x0).all():
            raise DataError("non-finite value", field="x0")
        with torch.no_grad():
            self.x0.copy_(x0.to(self.x0))

    def set_cores(self, cores: Sequence[torch.Tensor]) -> None:
        """Replace the tensor-train cores (bond dimensions may change; physical dim must be N)."""
        f, nb = self.n_latent, self.config.n_basis
        if len(cores) != f:
            raise ShapeError(f"need {f} cores, got {len(cores)}")
        check_train_cores(cores, nb)
        dtype = self.U.dtype
        self.cores = nn.ParameterList([nn.Parameter(c.detach().to(dtype).clone()) for c in cores])
        self.config.bond_dims = self.bond_dims

    # ------------------------------------------------------------------------------ basis maps
    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """Latent coordinates q = x U: (B, n) -> (B, f)."""
        return x @ self.U

    def centres(self) -> torch.Tensor:
        """Basis centres q̄ = x0 U: (N−1, f)."""
        return self.x0 @ self.U

    def _basis(self, k: int, q: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.w[k] * (q.unsqueeze(1) - centre) + self.b[k]  # (P, N-1)
        vals, ders = [], []
        for name, lo, hi in self._blocks:
            a, da = ACTIVATIONS[name](t[:, lo:hi])
            vals.append(a)
            ders.append(da * self.w[k, lo:hi])  # chain rule dt/dq = w
        ones = torch.ones_like(q).unsqueeze(1)  # (P, 1)
        phi = torch.cat([ones, *vals], dim=1)  # (P, N)
        dphi = torch.cat([torch.zeros_like(ones), *ders], dim=1)  # (P, N)
        return phi, dphi

    def _check_mode(self, k: int, q: torch.Tensor) -> None:
        if not 0 <= k < self.n_latent:
            raise ShapeError(f"mode k={k} out of range [0, {self.n_latent})")
        if q.dim() != 1:
            raise ShapeError(f"q must be a 1-d tensor of latent coordinate values, got shape {tuple(q.shape)}")

    def basis_values(self, k: int, q: torch.Tensor) -> torch.Tensor:
        """φ_ρ(q) for latent mode k: q (P,) -> (P, N); column 0 is the constant 1."""
        self._check_mode(k, q)
        return self._basis(k, q, self.centres()[:, k])[0]

    def basis_derivatives(self, k: int, q: torch.Tensor) -> torch.Tensor:
        """dφ_ρ/dq for latent mode k: q (P,) -> (P, N); column 0 is zero."""
        self._check_mode(k, q)
        return self._basis(k, q, self.centres()[:, k])[1]

    def site_bases(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Basis values and derivatives at every site for a batch x (B, n): two lists of (B, N)."""
        q = self.latent(x)  # (B, f)
        qc = self.centres()  # (N-1, f)
        phis, dphis = [], []
        for k in range(self.n_latent):
            phi, dphi = self._basis(k, q[:, k], qc[:, k])
            phis.append(phi)
            dphis.append(dphi)
        return phis, dphis

    # ----------------------------------------------------------------------------- evaluation
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy V(x): (B, n) -> (B,)."""
        self.check_input(x)
        phis, _ = self.site_bases(x)
        env = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)  # (B, 1)
        for phi, core in zip(phis, self.cores):
            env = torch.einsum("ba,bn,anc->bc", env, phi, core)  # (B, D_k)
        return self.norm * env[:, 0]

    def energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and analytic forces ``F = −∂V/∂x``: x (B, n) -> (E (B,), F (B, n)).

        Differentiable with respect to all parameters (used by force-matching losses).
        """
        self.check_input(x)
        phis, dphis = self.site_bases(x)
        n_batch, f = x.shape[0], self.n_latent
        mats, dmats = [], []
        for phi, dphi, core in zip(phis, dphis, self.cores):
            dl, nb, dr = core.shape
            flat = core.permute(1, 0, 2).reshape(nb, dl * dr)  # (N, Dl*Dr)
            mats.append((phi @ flat).view(n_batch, dl, dr))  # (B, Dl, Dr)
            dmats.append((dphi @ flat).view(n_batch, dl, dr))  # (B, Dl, Dr)
        lefts = [torch.ones(n_batch, 1, 1, dtype=x.dtype, device=x.device)]  # L_0 (B, 1, 1)
        for k in range(f - 1):
            lefts.append(torch.bmm(lefts[-1], mats[k]))  # L_{k+1} (B, 1, D_k)
        right = torch.ones(n_batch, 1, 1, dtype=x.dtype, device=x.device)  # R_f (B, 1, 1)
        dvdq = [None] * f
        for k in range(f - 1, -1, -1):
            dvdq[k] = torch.bmm(torch.bmm(lefts[k], dmats[k]), right)[:, 0, 0]  # ∂V/∂q_k (B,)
            if k > 0:
                right = torch.bmm(mats[k], right)  # R_k (B, D_{k-1}, 1)
            else:
                energy = torch.bmm(mats[0], right)[:, 0, 0]  # (B,)
        grad_q = torch.stack(dvdq, dim=1)  # (B, f)
        forces = -(grad_q @ self.U.T)  # (B, n)
        return self.norm * energy, self.norm * forces

    def extra_repr(self) -> str:
        c = self.config
        return (f"n={c.n_coords}, f={c.n_latent}, N={c.n_basis}, activation={c.activation!r}, "
                f"bonds={self.bond_dims}, params={self.num_parameters()}")
