"""scikit-learn estimators for the descriptor models and baselines of Sommer & Dunham.

Each estimator takes plain hyperparameters in its constructor (nothing is computed there), so
it composes with ``clone``, pipelines and :class:`sklearn.model_selection.GridSearchCV`.
``X`` is the dense, structure-averaged descriptor tensor ``(n_samples, *dims)`` (e.g.
``(n, n_species, n_species, n_max, n_max, l_max + 1)``) as a NumPy array or torch tensor; the
descriptor dimensions are read from ``X`` at ``fit``. ``y`` holds one target per sample.

Fitted attributes: ``model_`` (the torch module, saveable with :func:`entangle.io.save`),
``history_`` (loss curves, for gradient-trained models), ``dims_``.

>>> import numpy as np
>>> from entangle.estimators import MPSEstimator
>>> X = np.random.default_rng(0).normal(size=(40, 2, 2, 2, 2, 2))
>>> y = X.reshape(40, -1).sum(1)
>>> est = MPSEstimator(chi=2, epochs=0, als_sweeps=3, ridge=1e-12).fit(X, y)
>>> round(est.score(X, y), 3)
1.0
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from entangle.errors import ConfigError, ShapeError
from entangle.models.baselines import DenseNNConfig, DenseNNRegressor, GPRConfig, RBFGPRegressor, SOAPGPRegressor
from entangle.models.descriptor_tn import (
    DenseTensorConfig, DenseTensorRegressor, DescriptorModel, FeatureMapConfig, FeatureMapMPS, MERARegressor,
    MPOConfig, MPORegressor, MPSConfig, MPSRegressor, TrainHistory, TreeConfig, TTNRegressor, _is_int, _prepare,
    check_targets, fit_model, linear_warm_start,
)

__all__ = ["MPSEstimator", "MPOEstimator", "TTNEstimator", "MERAEstimator", "DenseTensorEstimator",
           "FeatureMapMPSEstimator", "DenseNNEstimator", "RBFGPREstimator", "SOAPGPREstimator"]


def _descriptor_array(X) -> torch.Tensor:
    x = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
    if x.dim() < 3:
        raise ShapeError(f"X must be a descriptor tensor (n_samples, d_1, ..., d_k) with k >= 2, got shape {tuple(x.shape)}")
    return x


class _Base(RegressorMixin, BaseEstimator):
    """Shared ``fit``/``predict`` of the estimators; subclasses build the model."""

    def _model(self, dims: list[int]) -> DescriptorModel:
        raise NotImplementedError

    def _train(self, model: DescriptorModel, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def fit(self, X, y):
        """Fit on descriptors ``X: (n_samples, *dims)`` and targets ``y: (n_samples,)``."""
        x = _descriptor_array(X)
        y = check_targets(torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y, x.shape[0])
        dims = [int(d) for d in x.shape[1:]]
        model = self._model(dims)
        self._train(model, x, y)
        self.model_, self.dims_ = model, dims
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted targets ``(n_samples,)`` for descriptors ``X: (n_samples, *dims)``."""
        check_is_fitted(self, "model_")
        self.model_.eval()
        with torch.no_grad():
            return self.model_(_descriptor_array(X)).detach().cpu().numpy().astype(np.float64)


class _GradientBase(_Base):
    """Adam with early stopping on an internal validation split (``val_fraction`` of the samples,
    drawn with ``seed``), then optional sweeps (:meth:`_sweep`) that keep the best validation state."""

    def _split(self, model: DescriptorModel, x: torch.Tensor, y: torch.Tensor):
        n = x.shape[0]
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction == 0 or n < 2:
            return x, y, None
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val = min(max(1, round(self.val_fraction * n)), n - 1)
        return x[perm[n_val:]], y[perm[n_val:]], (x[perm[:n_val]], y[perm[:n_val]])

    def _train(self, model: DescriptorModel, x: torch.Tensor, y: torch.Tensor) -> None:
        if not _is_int(self.epochs) or self.epochs < 0:
            raise ConfigError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        x_train, y_train, validation = self._split(model, x, y)
        optimizer, loss = getattr(self, "optimizer", "adam"), getattr(self, "loss", "mse")
        delta, warm = getattr(self, "huber_delta", 0.1), getattr(self, "warm_start", None)
        if warm not in (None, "linear"):
            raise ConfigError(f"warm_start must be None or 'linear', got {warm!r}")
        if warm == "linear":
            linear_warm_start(model, x_train, y_train, ridge=self.warm_start_ridge, loss=loss, huber_delta=delta)
        if self.epochs > 0:
            self.history_ = fit_model(model, x_train, y_train, validation=validation, val_fraction=0.0,
                                      epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                      patience=self.patience, weight_decay=self.weight_decay, seed=self.seed,
                                      normalize=warm is None, optimizer=optimizer, loss=loss, huber_delta=delta)
        else:
            if warm is None:
                model.set_normalization(x_train, y_train)
            self.history_ = TrainHistory()
        n_sweeps = self._n_sweeps()
        if not _is_int(n_sweeps) or n_sweeps < 0:
            raise ConfigError(f"the number of sweeps must be an integer >= 0, got {n_sweeps!r}")
        if n_sweeps == 0:
            return
        monitor = _prepare(model, *(validation if validation is not None else (x_train, y_train)), None, None)
        with torch.no_grad():
            best = float(monitor.loss(model))
        best_state = copy.deepcopy(model.state_dict())
        self.sweep_history_ = []
        for _ in range(n_sweeps):
            self.sweep_history_.extend(self._sweep(model, x_train, y_train))
            with torch.no_grad():
                current = float(monitor.loss(model))
            if current < best:
                best, best_state = current, copy.deepcopy(model.state_dict())
        _load_resized(model, best_state)

    def _site_config(self, dims: list[int]) -> dict:
        """The config fields every site-ordered model shares (``MPSConfig`` and its subclasses)."""
        return dict(dims=dims, chi=self.chi, site_order=None if self.site_order is None else list(self.site_order),
                    center_inputs=self.center_inputs, dtype=self.dtype, seed=self.seed)

    def _n_sweeps(self) -> int:
        return 0

    def _sweep(self, model: DescriptorModel, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        raise NotImplementedError


def _load_resized(model: torch.nn.Module, state: dict) -> None:
    """Load a state whose parameter shapes (bond dimensions) may differ from the current ones."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            own[name].data = torch.empty_like(tensor)
    model.load_state_dict(state)


class MPSEstimator(_GradientBase):
    """:class:`~entangle.models.descriptor_tn.MPSRegressor` as an estimator.

    ``als_sweeps`` two-site ALS sweeps (exact ridge solves, ``ridge``, truncation ``max_bond``
    (default ``chi``) / ``cutoff``) follow ``epochs`` of Adam (``epochs=0``: ALS only); the
    sweep with the best validation loss is kept. ``optimizer`` (``"adam"``/``"lbfgs"``), ``loss``
    (``"mse"``/``"huber"``, ``huber_delta``) and ``warm_start`` (``None``/``"linear"``, ridge
    ``warm_start_ridge``) are those of :func:`~entangle.models.descriptor_tn.fit_model` and
    :func:`~entangle.models.descriptor_tn.linear_warm_start`.
    """

    def __init__(self, chi=8, site_order=None, epochs=500, lr=1e-2, batch_size=None, patience=50,
                 val_fraction=0.2, weight_decay=0.0, als_sweeps=0, ridge=1e-6, max_bond=None, cutoff=None,
                 center_inputs=True, dtype="float64", seed=0, optimizer="adam", loss="mse", huber_delta=0.1,
                 warm_start=None, warm_start_ridge=1e-5):
        self.optimizer, self.loss, self.huber_delta = optimizer, loss, huber_delta
        self.warm_start, self.warm_start_ridge = warm_start, warm_start_ridge
        self.chi, self.site_order, self.epochs, self.lr = chi, site_order, epochs, lr
        self.batch_size, self.patience, self.val_fraction, self.weight_decay = batch_size, patience, val_fraction, weight_decay
        self.als_sweeps, self.ridge, self.max_bond, self.cutoff = als_sweeps, ridge, max_bond, cutoff
        self.center_inputs, self.dtype, self.seed = center_inputs, dtype, seed

    def _n_sweeps(self) -> int:
        return self.als_sweeps

    def _model(self, dims):
        return MPSRegressor(MPSConfig(**self._site_config(dims)))

    def _sweep(self, model, x, y):
        return model.als_sweep(x, y, n_sweeps=1, ridge=self.ridge,
                               max_bond=self.chi if self.max_bond is None else self.max_bond, cutoff=self.cutoff)


class MPOEstimator(_GradientBase):
    """:class:`~entangle.models.descriptor_tn.MPORegressor` as an estimator; optional two-site
    local-gradient ``sweeps`` (``sweep_steps`` steps per bond, truncation ``max_bond`` default ``chi``).
    ``linear_chi`` adds the linear MPS term; ``optimizer``, ``loss``, ``huber_delta``,
    ``warm_start`` (needs ``linear_chi > 0``) and ``warm_start_ridge`` as for :class:`MPSEstimator`."""

    def __init__(self, chi=4, site_order=None, epochs=500, lr=1e-2, batch_size=None, patience=50,
                 val_fraction=0.2, weight_decay=0.0, sweeps=0, sweep_steps=10, max_bond=None, cutoff=None,
                 center_inputs=False, dtype="float64", seed=0, linear_chi=0, optimizer="adam", loss="mse",
                 huber_delta=0.1, warm_start=None, warm_start_ridge=1e-5):
        self.linear_chi, self.optimizer, self.loss, self.huber_delta = linear_chi, optimizer, loss, huber_delta
        self.warm_start, self.warm_start_ridge = warm_start, warm_start_ridge
        self.chi, self.site_order, self.epochs, self.lr = chi, site_order, epochs, lr
        self.batch_size, self.patience, self.val_fraction, self.weight_decay = batch_size, patience, val_fraction, weight_decay
        self.sweeps, self.sweep_steps, self.max_bond, self.cutoff = sweeps, sweep_steps, max_bond, cutoff
        self.center_inputs, self.dtype, self.seed = center_inputs, dtype, seed

    def _n_sweeps(self) -> int:
        return self.sweeps

    def _model(self, dims):
        return MPORegressor(MPOConfig(**self._site_config(dims), linear_chi=self.linear_chi))

    def _sweep(self, model, x, y):
        return model.gradient_sweep(x, y, n_sweeps=1, steps=self.sweep_steps,
                                    max_bond=self.chi if self.max_bond is None else self.max_bond, cutoff=self.cutoff)


class _TreeEstimator(_GradientBase):
    model_class: type = TTNRegressor

    def __init__(self, chi=8, site_order=None, epochs=500, lr=1e-2, batch_size=None, patience=50,
                 val_fraction=0.2, weight_decay=0.0, center_inputs=True, dtype="float64", seed=0):
        self.chi, self.site_order, self.epochs, self.lr = chi, site_order, epochs, lr
        self.batch_size, self.patience, self.val_fraction, self.weight_decay = batch_size, patience, val_fraction, weight_decay
        self.center_inputs, self.dtype, self.seed = center_inputs, dtype, seed

    def _model(self, dims):
        return self.model_class(TreeConfig(**self._site_config(dims)))


class TTNEstimator(_TreeEstimator):
    """:class:`~entangle.models.descriptor_tn.TTNRegressor` as an estimator (Adam)."""

    model_class = TTNRegressor


class MERAEstimator(_TreeEstimator):
    """:class:`~entangle.models.descriptor_tn.MERARegressor` as an estimator (Adam)."""

    model_class = MERARegressor


class DenseTensorEstimator(_GradientBase):
    """:class:`~entangle.models.descriptor_tn.DenseTensorRegressor` as an estimator (Adam)."""

    def __init__(self, init_std=None, epochs=500, lr=1e-2, batch_size=None, patience=50, val_fraction=0.2,
                 weight_decay=0.0, center_inputs=True, dtype="float64", seed=0):
        self.init_std, self.epochs, self.lr, self.batch_size = init_std, epochs, lr, batch_size
        self.patience, self.val_fraction, self.weight_decay = patience, val_fraction, weight_decay
        self.center_inputs, self.dtype, self.seed = center_inputs, dtype, seed

    def _model(self, dims):
        return DenseTensorRegressor(DenseTensorConfig(dims=dims, init_std=self.init_std,
                                                      center_inputs=self.center_inputs, dtype=self.dtype, seed=self.seed))


class FeatureMapMPSEstimator(_GradientBase):
    """:class:`~entangle.models.descriptor_tn.FeatureMapMPS` (Stoudenmire–Schwab) as an estimator (Adam)."""

    def __init__(self, chi=8, init_noise=1e-2, epochs=500, lr=1e-3, batch_size=None, patience=50,
                 val_fraction=0.2, weight_decay=0.0, dtype="float64", seed=0):
        self.chi, self.init_noise, self.epochs, self.lr, self.batch_size = chi, init_noise, epochs, lr, batch_size
        self.patience, self.val_fraction, self.weight_decay = patience, val_fraction, weight_decay
        self.dtype, self.seed = dtype, seed

    def _model(self, dims):
        return FeatureMapMPS(FeatureMapConfig(dims=dims, chi=self.chi, init_noise=self.init_noise,
                                              dtype=self.dtype, seed=self.seed))


class DenseNNEstimator(_GradientBase):
    """:class:`~entangle.models.baselines.DenseNNRegressor` as an estimator (Adam)."""

    def __init__(self, hidden=(1024, 512, 256), activation="relu", dropout=0.0, epochs=500, lr=1e-3,
                 batch_size=None, patience=50, val_fraction=0.2, weight_decay=0.0, center_inputs=True,
                 dtype="float64", seed=0):
        self.hidden, self.activation, self.dropout, self.epochs, self.lr = hidden, activation, dropout, epochs, lr
        self.batch_size, self.patience, self.val_fraction, self.weight_decay = batch_size, patience, val_fraction, weight_decay
        self.center_inputs, self.dtype, self.seed = center_inputs, dtype, seed

    def _model(self, dims):
        return DenseNNRegressor(DenseNNConfig(dims=dims, hidden=list(self.hidden), activation=self.activation,
                                              dropout=self.dropout, center_inputs=self.center_inputs,
                                              dtype=self.dtype, seed=self.seed))


class _GPREstimator(_Base):
    def _train(self, model, x, y) -> None:
        model.fit(x, y)


class RBFGPREstimator(_GPREstimator):
    """:class:`~entangle.models.baselines.RBFGPRegressor` (``C * RBF + White``) as an estimator."""

    def __init__(self, n_restarts_optimizer=0, dtype="float64", seed=0):
        self.n_restarts_optimizer, self.dtype, self.seed = n_restarts_optimizer, dtype, seed

    def _model(self, dims):
        return RBFGPRegressor(GPRConfig(dims=dims, n_restarts_optimizer=self.n_restarts_optimizer,
                                        dtype=self.dtype, seed=self.seed))


class SOAPGPREstimator(_GPREstimator):
    """:class:`~entangle.models.baselines.SOAPGPRegressor` (``C * k_SOAP^zeta + White``) as an estimator."""

    def __init__(self, zeta=2, n_restarts_optimizer=0, dtype="float64", seed=0):
        self.zeta, self.n_restarts_optimizer, self.dtype, self.seed = zeta, n_restarts_optimizer, dtype, seed

    def _model(self, dims):
        return SOAPGPRegressor(GPRConfig(dims=dims, zeta=self.zeta, n_restarts_optimizer=self.n_restarts_optimizer,
                                         dtype=self.dtype, seed=self.seed))

