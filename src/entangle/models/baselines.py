"""Baselines of Sommer & Dunham (Sec. IV A, Fig. 12) on the same descriptor tensors.

* :class:`RBFGPRegressor` — Gaussian process regression on the flattened descriptor with
  ``ConstantKernel * RBF + WhiteKernel`` (hyperparameters by marginal-likelihood maximisation in
  scikit-learn);
* :class:`SOAPGPRegressor` — GPR with the normalised SOAP kernel raised to ``zeta`` (= 2 in the
  paper), ``k(a, b) = (a·b / |a||b|)^zeta``, times a constant, plus white noise;
* :class:`DenseNNRegressor` — the fully connected network of the comparison. The paper uses "the
  deep NN architecture described in [11]" (the SOAP + NN entry of the NOMAD 2018 Kaggle
  competition) and only states its size, O(10^6) weights; the widths of that network are not
  given in the paper, so the default hidden widths (1024, 512, 256) are chosen to give that size
  (1.25 M weights for dims (3, 3, 4, 4, 4), 1.7 M for (4, 4, 4, 4, 4)).

All three share the :class:`~entangle.models.descriptor_tn.DescriptorModel` interface (config,
validation, normalisation, ``forward``, ``entangle.io.save/load``). The GPR models are fitted by
scikit-learn (:meth:`fit`); the posterior mean is then evaluated in torch from buffers
(training inputs, dual weights ``alpha`` and kernel hyperparameters), so a saved model predicts
without scikit-learn state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, WhiteKernel
from torch import nn

from entangle.errors import ConfigError, DataError
from entangle.io import register_model
from entangle.models.descriptor_tn import DescriptorModel, DescriptorModelConfig, _is_int, check_targets

__all__ = ["NormalizedDotProductKernel", "GPRConfig", "RBFGPRegressor", "SOAPGPRegressor",
           "DenseNNConfig", "DenseNNRegressor", "ACTIVATIONS"]


class NormalizedDotProductKernel(Kernel):
    """scikit-learn kernel ``k(a, b) = (a·b / (|a| |b|))^zeta``: the SOAP kernel (Bartók, Kondor &
    Csányi 2013) on power-spectrum vectors; ``zeta`` is fixed (no hyperparameters).

    Rows of zero norm have no direction; the calling model rejects them before this runs.
    """

    def __init__(self, zeta: int = 2):
        self.zeta = zeta

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def __call__(self, X, Y=None, eval_gradient=False):
        a = self._unit(X)
        if Y is not None and eval_gradient:
            raise ValueError("gradient can only be evaluated when Y is None")
        b = a if Y is None else self._unit(Y)
        k = (a @ b.T) ** self.zeta
        if eval_gradient:
            return k, np.empty((a.shape[0], a.shape[0], 0))
        return k

    def diag(self, X) -> np.ndarray:
        return np.ones(np.atleast_2d(X).shape[0])

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NormalizedDotProduct(zeta={self.zeta})"


@dataclass
class GPRConfig(DescriptorModelConfig):
    """GPR baselines.

    Parameters
    ----------
    zeta : SOAP kernel exponent (:class:`SOAPGPRegressor` only).
    n_restarts_optimizer : extra random restarts of the marginal-likelihood optimiser.
    center_inputs : off by default: the SOAP kernel compares directions of the raw descriptors
        (centring would change the kernel); the RBF kernel does not depend on it.
    """

    zeta: int = 2
    n_restarts_optimizer: int = 0
    center_inputs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.zeta) or self.zeta < 1:
            raise ConfigError(f"GPRConfig.zeta must be an integer >= 1, got {self.zeta!r}")
        if not _is_int(self.n_restarts_optimizer) or self.n_restarts_optimizer < 0:
            raise ConfigError(f"GPRConfig.n_restarts_optimizer must be an integer >= 0, got {self.n_restarts_optimizer!r}")


class _GPRBase(DescriptorModel):
    """Posterior mean ``raw(x) = sum_j k(x, x_j) alpha_j`` of a GP fitted by scikit-learn.

    Buffers: ``train_x (n_train, prod(dims))`` normalised training inputs, ``alpha (n_train,)``,
    ``amplitude``, ``length_scale`` (RBF only) and ``noise`` (0-dim) kernel hyperparameters.
    """

    config_class = GPRConfig

    def __init__(self, config: GPRConfig):
        super().__init__(config)
        self.register_buffer("train_x", torch.zeros(0, self.n_features, dtype=self.dtype))
        self.register_buffer("alpha", torch.zeros(0, dtype=self.dtype))
        self.register_buffer("amplitude", torch.ones((), dtype=self.dtype))
        self.register_buffer("length_scale", torch.ones((), dtype=self.dtype))
        self.register_buffer("noise", torch.zeros((), dtype=self.dtype))
        self.gpr_: GaussianProcessRegressor | None = None

    def _sklearn_kernel(self) -> Kernel:
        raise NotImplementedError

    def _store_kernel(self, kernel: Kernel) -> None:
        raise NotImplementedError

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_directions(self, flat: torch.Tensor) -> None:
        """Hook: reject inputs the kernel cannot handle (zero vectors for the SOAP kernel)."""

    def fit(self, x, y) -> _GPRBase:
        """Fit kernel hyperparameters and the posterior on averaged descriptors ``x: (n, *dims)``,
        targets ``y: (n,)`` (scikit-learn, L-BFGS-B on the log marginal likelihood)."""
        x = self.check_input(x)
        y = check_targets(y, x.shape[0]).to(self.dtype)
        self.set_normalization(x, y)
        xn = self.normalize_inputs(x).reshape(x.shape[0], -1)
        self._check_directions(xn)
        yn = ((y - self.target_shift) / self.target_scale).cpu().numpy().astype(np.float64)
        gpr = GaussianProcessRegressor(kernel=self._sklearn_kernel(), normalize_y=False,
                                       n_restarts_optimizer=self.config.n_restarts_optimizer,
                                       random_state=self.config.seed)
        gpr.fit(xn.detach().cpu().numpy().astype(np.float64), yn)
        self.gpr_ = gpr
        self.train_x = xn.detach().clone()
        self.alpha = torch.as_tensor(gpr.alpha_, dtype=self.dtype, device=xn.device).reshape(-1)
        self._store_kernel(gpr.kernel_)
        return self

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        if self.alpha.numel() == 0:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(x, y) first")
        flat = xn.reshape(xn.shape[0], -1)
        self._check_directions(flat)
        return self._kernel(flat, self.train_x) @ self.alpha  # [batch]

    def forward(self, x, structure_index=None, n_structures: int | None = None) -> torch.Tensor:
        """Posterior mean for averaged descriptors ``x: (batch, *dims)``. A per-atom structure
        index is refused: the GP was fitted on structure-averaged descriptors (eq. 22)."""
        if structure_index is not None:
            raise ConfigError(f"{type(self).__name__} predicts from averaged descriptors only; "
                              "per-atom inputs with a structure_index are not supported")
        return super().forward(x)


@register_model
class RBFGPRegressor(_GPRBase):
    """GPR with ``ConstantKernel * RBF + WhiteKernel`` on the flattened normalised descriptor."""

    def _sklearn_kernel(self) -> Kernel:
        return (ConstantKernel(1.0, (1e-5, 1e5)) * RBF(1.0, (1e-3, 1e3))
                + WhiteKernel(1e-2, (1e-8, 1e1)))

    def _store_kernel(self, kernel: Kernel) -> None:
        self.amplitude.fill_(float(kernel.k1.k1.constant_value))
        self.length_scale.fill_(float(kernel.k1.k2.length_scale))
        self.noise.fill_(float(kernel.k2.noise_level))

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T).clamp_min(0.0)  # [na, nb]
        return self.amplitude * torch.exp(-0.5 * d2 / self.length_scale**2)


@register_model
class SOAPGPRegressor(_GPRBase):
    """GPR with ``ConstantKernel * (a·b / |a||b|)^zeta + WhiteKernel`` (SOAP kernel, zeta = 2)."""

    def _sklearn_kernel(self) -> Kernel:
        return (ConstantKernel(1.0, (1e-5, 1e5)) * NormalizedDotProductKernel(self.config.zeta)
                + WhiteKernel(1e-2, (1e-8, 1e1)))

    def _store_kernel(self, kernel: Kernel) -> None:
        self.amplitude.fill_(float(kernel.k1.k1.constant_value))
        self.noise.fill_(float(kernel.k2.noise_level))

    def _check_directions(self, flat: torch.Tensor) -> None:
        zero = (flat.norm(dim=1) == 0).nonzero()
        if zero.numel():
            raise DataError("descriptor is the zero vector; the normalised SOAP kernel is undefined",
                            index=int(zero[0, 0]), field="descriptor")

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        return self.amplitude * (a @ b.T) ** self.config.zeta


# --------------------------------------------------------------------------------------- dense NN
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus}


@dataclass
class DenseNNConfig(DescriptorModelConfig):
    """:class:`DenseNNRegressor`.

    Parameters
    ----------
    hidden : widths of the hidden layers (default O(10^6) weights, see the module docstring).
    activation : one of :data:`ACTIVATIONS`.
    dropout : dropout probability after every hidden layer (training only).
    """

    hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.hidden, (list, tuple)) or not all(_is_int(h) and h >= 1 for h in self.hidden):
            raise ConfigError(f"DenseNNConfig.hidden must be a list of integers >= 1, got {self.hidden!r}")
        self.hidden = [int(h) for h in self.hidden]
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"DenseNNConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"DenseNNConfig.dropout must be in [0, 1), got {self.dropout}")


@register_model
class DenseNNRegressor(DescriptorModel):
    """Fully connected network on the flattened normalised descriptor (Fig. 9):
    ``Linear -> activation (-> dropout)`` per hidden layer, then ``Linear -> 1``.

    Weights and biases start uniform in ``±1/sqrt(fan_in)`` (PyTorch's default scale), drawn from
    a generator seeded by ``config.seed``.
    """

    config_class = DenseNNConfig

    def __init__(self, config: DenseNNConfig):
        super().__init__(config)
        gen = torch.Generator().manual_seed(config.seed)
        widths = [self.n_features, *config.hidden, 1]
        self.linears = nn.ModuleList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layer = nn.Linear(fan_in, fan_out, dtype=self.dtype)
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                layer.weight.copy_(torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(-bound, bound, generator=gen))
                layer.bias.copy_(torch.empty(fan_out, dtype=torch.float64).uniform_(-bound, bound, generator=gen))
            self.linears.append(layer)
        self.activation = ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)

    def _layers(self, xn: torch.Tensor) -> list[torch.Tensor]:
        h = xn.reshape(xn.shape[0], -1)  # [batch, prod(dims)]
        outputs = []
        for layer in self.linears[:-1]:
            h = self.dropout(self.activation(layer(h)))  # [batch, width]
            outputs.append(h)
        outputs.append(self.linears[-1](h).squeeze(-1))  # [batch]
        return outputs

    def raw(self, xn: torch.Tensor) -> torch.Tensor:
        return self._layers(xn)[-1]

    @torch.no_grad()
    def hidden_states(self, x) -> list[torch.Tensor]:
        """Activations of every hidden layer, ``(batch, width)`` each (evaluation mode)."""
        x = self.check_input(x)
        was_training = self.training
        self.eval()
        try:
            return self._layers(self.normalize_inputs(x))[:-1]
        finally:
            self.train(was_training)
