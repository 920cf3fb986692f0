"""Compression of large descriptor tensors (Sommer & Dunham, Sec. IV D, Figs. 8, 17, 18, Table I).

Two ways to shrink the input state ``|B(2)>`` before a supervised tensor network sees it:

1. **MPS factorisation of the inputs** (Fig. 8a, Fig. 17): every descriptor tensor is
   replaced by its TT-SVD (:func:`entangle.tn.tt_svd`) truncated to a maximum bond ``chi_in``.
   By Eckart–Young the discarded weight of each SVD is the exact Frobenius error, and the
   errors of successive SVDs are orthogonal, so ``||B - MPS(B)||_F`` equals the returned
   ``discarded`` (:class:`FactorizedDescriptors`). A model MPS contracts with the factorised
   input site by site (Fig. 8b, :meth:`FactorizedDescriptors.overlap`) at a cost linear in the
   number of sites instead of the dense ``prod(d_k)``.
2. **MPO autoencoder** (Fig. 18, :class:`MPOAutoencoder`): an encoder MPO maps the input
   ``(d_in,)*N`` to a latent ``(d_latent,)*N`` tensor and a decoder MPO maps it back; both are
   trained by Adam on the mean squared reconstruction error (:func:`fit_autoencoder`). The
   encoded tensor (Fig. 18b) is the compressed input, ``d_latent**N / d_in**N`` of the size.

For large ``n_max``, ``l_max`` and many species only the independent entries of ``B2`` are kept
(:func:`independent_entries`: ``B2`` is symmetric under ``(α1, n1) <-> (α2, n2)``) and the
flat vector is zero-padded to ``d**N`` so that every site has the same physical dimension
(:func:`pad_to_sites`), as the paper does for BA10.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.io import DTYPES, register_model
from entangle.tn import MPO, tt_svd

__all__ = ["independent_indices", "independent_entries", "pad_to_sites", "FactorizedDescriptors",
           "factorize_descriptors", "AutoencoderConfig", "MPOAutoencoder", "AutoencoderHistory",
           "fit_autoencoder"]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- independent entries
def independent_indices(n_species: int, n_max: int, n_l: int) -> np.ndarray:
    """Flat indices of the independent entries of a power spectrum ``(S, S, n, n, L)``.

    ``B2[α1, α2, n1, n2, l] = B2[α2, α1, n2, n1, l]``, so the entries with ``(α1, n1) <= (α2, n2)``
    in the order ``α1 <= α2``, then ``n1``, ``n2`` (``n2 >= n1`` when ``α1 == α2``), then ``l``
    determine the tensor: ``S (S - 1) / 2 * n**2 * L + S * n (n + 1) / 2 * L`` of them.

    Returns
    -------
    (n_independent,) int64 indices into ``B2.reshape(-1)``.
    """
    for name, value in (("n_species", n_species), ("n_max", n_max), ("n_l", n_l)):
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    a1, a2, n1, n2, ell = np.meshgrid(*(np.arange(d) for d in (n_species, n_species, n_max, n_max, n_l)),
                                      indexing="ij")
    keep = (a1 < a2) | ((a1 == a2) & (n1 <= n2))
    return np.flatnonzero(keep.reshape(-1)).astype(np.int64)


def independent_entries(b2: torch.Tensor) -> torch.Tensor:
    """The independent entries of power spectra ``b2: (batch, S, S, n, n, L)`` -> ``(batch, n_independent)``.

    Raises :class:`ShapeError` unless the two species and the two radial axes have equal sizes,
    and :class:`DataError` if a tensor is not symmetric (to 1e-10 relative), since dropping the
    other half would then lose information.
    """
    if b2.dim() != 6 or b2.shape[1] != b2.shape[2] or b2.shape[3] != b2.shape[4]:
        raise ShapeError(f"power spectra must have shape (batch, S, S, n, n, L), got {tuple(b2.shape)}")
    transposed = b2.permute(0, 2, 1, 4, 3, 5)
    scale = b2.abs().amax(dim=(1, 2, 3, 4, 5)).clamp_min(torch.finfo(b2.dtype).tiny)  # [batch]
    asym = (b2 - transposed).abs().amax(dim=(1, 2, 3, 4, 5)) / scale  # [batch]
    bad = (asym > 1e-10).nonzero()
    if bad.numel():
        raise DataError(f"power spectrum is not symmetric under (α1, n1) <-> (α2, n2) "
                        f"(relative asymmetry {float(asym[bad[0, 0]]):.2e})", index=int(bad[0, 0]),
                        field="descriptor")
    index = torch.from_numpy(independent_indices(b2.shape[1], b2.shape[3], b2.shape[5])).to(b2.device)
    return b2.reshape(b2.shape[0], -1)[:, index]  # [batch, n_independent]


def pad_to_sites(flat: torch.Tensor, phys_dim: int, n_sites: int | None = None) -> torch.Tensor:
    """Zero-pad feature vectors ``flat: (batch, F)`` at the end to ``phys_dim**n_sites`` entries
    and reshape to ``(batch, phys_dim, ..., phys_dim)`` (``n_sites`` legs, row-major).

    ``n_sites`` defaults to the smallest number with ``phys_dim**n_sites >= F``.
    """
    if flat.dim() != 2:
        raise ShapeError(f"features must have shape (batch, F), got {tuple(flat.shape)}")
    if not _is_int(phys_dim) or phys_dim < 2:
        raise ConfigError(f"phys_dim must be an integer >= 2, got {phys_dim!r}")
    n_features = flat.shape[1]
    if n_sites is None:
        n_sites = max(1, math.ceil(math.log(n_features) / math.log(phys_dim) - 1e-12))
        while phys_dim**n_sites < n_features:
            n_sites += 1
    if not _is_int(n_sites) or n_sites < 1:
        raise ConfigError(f"n_sites must be an integer >= 1, got {n_sites!r}")
    size = phys_dim**n_sites
    if size < n_features:
        raise ShapeError(f"{n_features} features do not fit {n_sites} sites of dimension {phys_dim} ({size})")
    padded = torch.nn.functional.pad(flat, (0, size - n_features))  # [batch, d**N]
    return padded.reshape(flat.shape[0], *([phys_dim] * n_sites))


# ------------------------------------------------------------------------- MPS-factorised inputs
@dataclass
class FactorizedDescriptors:
    """A batch of descriptor tensors, each as an MPS from a truncated TT-SVD (Fig. 8a).

    Attributes
    ----------
    cores : per site ``(batch, D_{k-1}, d_k, D_k)``; samples of lower rank are zero-padded to the
        common bond dimension (zero padding changes no contraction).
    discarded : (batch,) ``||B - MPS(B)||_F`` of each sample (exact).
    bond_dims : (batch, N - 1) bond dimensions of each sample before padding.
    """

    cores: list[torch.Tensor]
    discarded: torch.Tensor
    bond_dims: torch.Tensor

    @property
    def dims(self) -> list[int]:
        return [int(c.shape[2]) for c in self.cores]

    def n_parameters(self) -> torch.Tensor:
        """(batch,) number of core entries of each sample's MPS (its own bond dimensions)."""
        ones = torch.ones(self.bond_dims.shape[0], 1, dtype=torch.long)
        bonds = torch.cat([ones, self.bond_dims, ones], dim=1)  # [batch, N + 1]
        d = torch.tensor(self.dims, dtype=torch.long)
        return (bonds[:, :-1] * d * bonds[:, 1:]).sum(1)

    def to_dense(self) -> torch.Tensor:
        """Reconstructed dense tensors ``(batch, d_1, ..., d_N)``."""
        b = self.cores[0].shape[0]
        state = self.cores[0].reshape(b, -1, self.cores[0].shape[-1])  # [batch, d_1, D_1]
        for core in self.cores[1:]:
            state = torch.einsum("bpl,bldr->bpdr", state, core).reshape(b, -1, core.shape[-1])  # [batch, prod d, D]
        return state.reshape(b, *self.dims)

    def overlap(self, model_cores: Sequence[torch.Tensor]) -> torch.Tensor:
        """``<psi|B_b>`` for a model MPS ``psi`` (cores ``(chi_{k-1}, d_k, chi_k)``) and every sample,
        contracted site by site without forming the dense input (Fig. 8b); ``(batch,)``."""
        if len(model_cores) != len(self.cores):
            raise ShapeError(f"model MPS has {len(model_cores)} sites, the inputs {len(self.cores)}")
        b = self.cores[0].shape[0]
        env = torch.ones(b, 1, 1, dtype=self.cores[0].dtype, device=self.cores[0].device)  # [batch, D, chi]
        for k, (x, w) in enumerate(zip(self.cores, model_cores)):
            if w.dim() != 3 or w.shape[1] != x.shape[2]:
                raise ShapeError(f"model core {k} must be (chi, {x.shape[2]}, chi'), got {tuple(w.shape)}")
            env = torch.einsum("bij,bidk->bjdk", env, x)  # [batch, chi, d, D']
            env = torch.einsum("bjdk,jdl->bkl", env, w)  # [batch, D', chi']
        return env.reshape(b)


def factorize_descriptors(x: torch.Tensor, max_bond: int | None = None, cutoff: float | None = None
                          ) -> FactorizedDescriptors:
    """TT-SVD of every sample of ``x: (batch, d_1, ..., d_N)`` with :func:`entangle.tn.tt_svd`.

    Parameters
    ----------
    x : dense descriptor tensors.
    max_bond : maximum bond dimension ``chi_in`` (None: exact).
    cutoff : relative singular-value cutoff (see :mod:`entangle.tn.decompose`).

    Returns
    -------
    :class:`FactorizedDescriptors`
    """
    if x.dim() < 3:
        raise ShapeError(f"descriptors must have shape (batch, d_1, ..., d_N) with N >= 2, got {tuple(x.shape)}")
    if max_bond is not None and (not _is_int(max_bond) or max_bond < 1):
        raise ConfigError(f"max_bond must be None or an integer >= 1, got {max_bond!r}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).nonzero()[0, 0])
        raise DataError("non-finite entries", index=bad, field="descriptor")
    dims = list(x.shape[1:])
    # the largest possible bond at every cut, capped by max_bond: the common padded sizes
    caps = [min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))]
    if max_bond is not None:
        caps = [min(c, max_bond) for c in caps]
    per_sample, discarded, bonds = [], [], []
    for sample in x:
        cores, disc = tt_svd(sample, None, max_bond, cutoff)
        per_sample.append(cores)
        discarded.append(disc)
        bonds.append([c.shape[-1] for c in cores[:-1]])
    padded = []
    for k in range(len(dims)):
        left = 1 if k == 0 else caps[k - 1]
        right = 1 if k == len(dims) - 1 else caps[k]
        site = x.new_zeros(x.shape[0], left, dims[k], right)  # [batch, D_{k-1}, d_k, D_k]
        for b, cores in enumerate(per_sample):
            core = cores[k]
            site[b, :core.shape[0], :, :core.shape[-1]] = core
        padded.append(site)
    return FactorizedDescriptors(padded, torch.stack(discarded), torch.tensor(bonds, dtype=torch.long))


# ------------------------------------------------------------------------------ MPO autoencoder
@dataclass
class AutoencoderConfig:
    """:class:`MPOAutoencoder`.

    Parameters
    ----------
    n_sites : number of sites ``N``.
    phys_dim : input dimension ``d_in`` of every site.
    latent_dim : latent dimension ``d_latent`` of every site (``<= d_in``).
    chi : bond dimension of the encoder and decoder MPOs (``chi_enc = chi_dec``).
    init_noise : std of the Gaussian noise added to the initial near-identity cores.
    dtype : ``"float64"`` or ``"float32"``.
    seed : seeds the initial cores.
    """

    n_sites: int
    phys_dim: int
    latent_dim: int
    chi: int = 6
    init_noise: float = 1e-2
    dtype: str = "float64"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("n_sites", 1), ("phys_dim", 1), ("latent_dim", 1), ("chi", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"AutoencoderConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.latent_dim > self.phys_dim:
            raise ConfigError(f"AutoencoderConfig.latent_dim ({self.latent_dim}) must not exceed phys_dim "
                              f"({self.phys_dim})")
        if not (isinstance(self.init_noise, (int, float)) and self.init_noise >= 0 and math.isfinite(self.init_noise)):
            raise ConfigError(f"AutoencoderConfig.init_noise must be a finite number >= 0, got {self.init_noise!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"AutoencoderConfig.dtype must be 'float64' or 'float32', got {self.dtype!r}")


def _near_identity_mpo(n_sites: int, d_out: int, d_in: int, chi: int, noise: float, gen: torch.Generator
                       ) -> list[torch.Tensor]:
    """MPO cores ``(D, d_out, d_in, D)`` equal to ``⊗_k I[:d_out, :d_in]`` plus Gaussian noise on
    every entry (bond index 0 carries the identity; boundary bonds are 1)."""
    eye = torch.eye(d_out, d_in, dtype=torch.float64)
    cores = []
    for k in range(n_sites):
        left = 1 if k == 0 else chi
        right = 1 if k == n_sites - 1 else chi
        core = noise * torch.randn(left, d_out, d_in, right, generator=gen, dtype=torch.float64)
        core[0, :, :, 0] += eye
        cores.append(core)
    return cores


@register_model
class MPOAutoencoder(nn.Module):
    """Encoder MPO ``(d_in)^N -> (d_latent)^N`` and decoder MPO back (Sommer & Dunham Fig. 18).

    ``encode(x)`` contracts the encoder with the input tensor (Fig. 18b); ``forward(x)`` is the
    reconstruction ``decode(encode(x))``. Inputs are scaled by the buffer ``input_scale`` (the
    RMS entry of the training inputs, :func:`fit_autoencoder`) before encoding and the
    reconstruction is scaled back, so both are in input units; the latent tensor is in scaled
    units.

    The cores start as the truncated identity ``I[:d_latent, :d_in]`` on every site (encoder) and
    its transpose (decoder) plus small noise: initially the autoencoder keeps the first
    ``d_latent`` components of every site.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        if not isinstance(config, AutoencoderConfig):
            raise ConfigError(f"MPOAutoencoder needs an AutoencoderConfig, got {type(config).__name__}")
        self.config = config
        dtype = DTYPES[config.dtype]
        gen = torch.Generator().manual_seed(config.seed)
        n, d, dl, chi, noise = config.n_sites, config.phys_dim, config.latent_dim, config.chi, config.init_noise
        self.encoder = nn.ParameterList([nn.Parameter(c.to(dtype))
                                         for c in _near_identity_mpo(n, dl, d, chi, noise, gen)])
        self.decoder = nn.ParameterList([nn.Parameter(c.to(dtype))
                                         for c in _near_identity_mpo(n, d, dl, chi, noise, gen)])
        self.register_buffer("input_scale", torch.ones((), dtype=dtype))

    @classmethod
    def from_config(cls, config: dict | AutoencoderConfig) -> MPOAutoencoder:
        if isinstance(config, dict):
            config = AutoencoderConfig(**config)
        return cls(config)

    @property
    def compression(self) -> float:
        """``d_latent**N / d_in**N``."""
        return (self.config.latent_dim / self.config.phys_dim) ** self.config.n_sites

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, x: torch.Tensor, d: int) -> torch.Tensor:
        shape = (d,) * self.config.n_sites
        if not isinstance(x, torch.Tensor) or x.dim() != 1 + len(shape) or tuple(x.shape[1:]) != shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"expected a batch of shape (batch, {', '.join(map(str, shape))}), got {got}")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).nonzero()[0, 0])
            raise DataError("non-finite entries", index=bad, field="descriptor")
        return x.to(self.input_scale.dtype)

    def _encode_scaled(self, xn: torch.Tensor) -> torch.Tensor:
        z = MPO(list(self.encoder)).apply(xn.reshape(xn.shape[0], -1))  # [batch, d_latent**N]
        return z.reshape(xn.shape[0], *([self.config.latent_dim] * self.config.n_sites))

    def _decode_scaled(self, z: torch.Tensor) -> torch.Tensor:
        xr = MPO(list(self.decoder)).apply(z.reshape(z.shape[0], -1))  # [batch, d_in**N]
        return xr.reshape(z.shape[0], *([self.config.phys_dim] * self.config.n_sites))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Compressed tensors ``(batch, d_latent, ..., d_latent)`` of inputs ``(batch, d_in, ..., d_in)``."""
        x = self._check(x, self.config.phys_dim)
        return self._encode_scaled(x / self.input_scale)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed inputs ``(batch, d_in, ..., d_in)`` from latent tensors."""
        z = self._check(z, self.config.latent_dim)
        return self._decode_scaled(z) * self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(batch, d_in, ..., d_in)`` of ``x`` in input units."""
        x = self._check(x, self.config.phys_dim)
        return self._decode_scaled(self._encode_scaled(x / self.input_scale)) * self.input_scale


@dataclass
class AutoencoderHistory:
    """Mean squared reconstruction errors (scaled units) per epoch of :func:`fit_autoencoder`."""

    initial_train_loss: float = math.nan
    initial_val_loss: float = math.nan
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf


def _reconstruction_mse(model: MPOAutoencoder, xn: torch.Tensor, batch_size: int) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, xn.shape[0], batch_size):
            chunk = xn[start:start + batch_size]
            total += float(((model._decode_scaled(model._encode_scaled(chunk)) - chunk) ** 2).sum())
    return total / xn.numel()


def fit_autoencoder(model: MPOAutoencoder, x_train: torch.Tensor, x_val: torch.Tensor, *, epochs: int = 50,
                    lr: float = 1e-2, batch_size: int = 64, patience: int = 10, seed: int = 0,
                    progress: bool = False) -> AutoencoderHistory:
    """Train an :class:`MPOAutoencoder` with Adam on the mean squared reconstruction error.

    Parameters
    ----------
    model : the autoencoder; its ``input_scale`` is set to the RMS entry of ``x_train``.
    x_train, x_val : (n, d_in, ..., d_in) inputs; the validation set selects the epoch whose
        weights are kept (early stopping after ``patience`` epochs without improvement).
    epochs, lr, batch_size, patience, seed : optimiser settings (``seed`` orders the batches).
    progress : tqdm progress bar.

    Returns
    -------
    :class:`AutoencoderHistory` (losses are per-entry MSE in units of ``input_scale**2``).
    """
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 1),
                             ("seed", seed, 0)):
        if not _is_int(value) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    x_train = model._check(x_train, model.config.phys_dim)
    x_val = model._check(x_val, model.config.phys_dim)
    rms = float(torch.sqrt((x_train**2).mean()))
    if rms == 0.0:
        raise DataError("all training inputs are zero", field="descriptor")
    with torch.no_grad():
        model.input_scale.fill_(rms)
    xt, xv = x_train / rms, x_val / rms
    history = AutoencoderHistory(initial_train_loss=_reconstruction_mse(model, xt, batch_size),
                                 initial_val_loss=_reconstruction_mse(model, xv, batch_size))
    history.best_val_loss = history.initial_val_loss
    best_state = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs_iter = tqdm(epochs_iter, desc=f"MPO autoencoder d_latent={model.config.latent_dim}", unit="epoch")
    for epoch in epochs_iter:
        order = torch.randperm(xt.shape[0], generator=gen)
        total = 0.0
        for start in range(0, xt.shape[0], batch_size):
            batch = xt[order[start:start + batch_size]]
            optimizer.zero_grad()
            loss = ((model._decode_scaled(model._encode_scaled(batch)) - batch) ** 2).mean()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        history.train_loss.append(total / xt.shape[0])
        history.val_loss.append(_reconstruction_mse(model, xv, batch_size))
        if history.val_loss[-1] < history.best_val_loss:
            history.best_val_loss, history.best_epoch = history.val_loss[-1], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= patience:
            break
        if progress:
            epochs_iter.set_postfix(train=f"{history.train_loss[-1]:.3g}", val=f"{history.val_loss[-1]:.3g}")
    model.load_state_dict(best_state)
    return history
