"""DMRG-like sweeping training of tensor neural networks (Jahromi & Orús, Sec. III).

For an MPO layer with cores ``w_1 .. w_N`` one sweep visits the bonds left to right and back.
At bond ``(i, i+1)`` (Sec. III A, steps a-g):

    B = w_i · w_{i+1}                       (a) merge into a bond tensor
    ΔB = ∂L/∂B                              (b) by autodiff through the whole hybrid network (Sec. III C)
    B' = B - α ΔB                           (c) local gradient-descent (LGD) step
    B' ≈ U' S' V'^†                          (d, e) truncated SVD, at most ``max_bond`` values
    w_i, w_{i+1} <- U', S' V'^†  (or U' S', V'^†)  (f) singular values go to the next site of the sweep

Before a layer is swept it is brought to mixed-canonical form with the centre on the first site,
and the centre then travels with the sweep. The environments of ``B`` are therefore isometries,
``S'`` are the exact Schmidt values of the weight across that bond, and ``ΔB`` is the projection
of the dense-weight gradient onto the two-site tangent space. (The paper's step (f) puts
``sqrt(S')`` on both sides; that leaves the gauge non-canonical, so we move the centre instead, as
two-site DMRG does.) Environments (step g) are implicit: the layer contracts ``B`` with the other
cores in the same cost-optimal order it uses for inference.

Strategies (Sec. III C):

* **PaL** (partial all layers): every sweep visits the bonds of every MPO layer in turn; after
  each bond update the dense parameters (dense layers and MPO biases) take one optimiser step with
  the gradient computed in the same backward pass. The paper finds it converges best.
* **LbL** (layer by layer): layers are visited in order; an MPO layer receives ``layer_sweeps``
  sweeps (its bias is stepped along with each bond update), a trainable dense layer one optimiser
  step (Eq. 8). One LbL "sweep" is one pass over all layers.

Local steps: ``"gd"`` is the paper's plain LGD ``B' = B - α ΔB``. ``"rms"`` divides the gradient
by a running root-mean-square of the gradients seen at the same bond of the same layer
(``v <- β v + (1-β) mean(ΔB²)``, bias-corrected, like Adam's second moment but one scalar per bond,
so it survives the change of gauge and shape of ``B`` between visits); the step is then about ``α``
per entry whatever the scale of the loss.

:func:`train_adam` is plain autodiff training of all parameters (cores included, fixed bond
dimensions) with Adam, the baseline the sweeps are compared with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.models.tnn import MPOLinear
from entangle.tn import merge, split, von_neumann_entropy

__all__ = ["DMRGSweeper", "train_adam", "evaluate", "layer_spectra"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = str | Callable[[torch.Tensor, torch.Tensor], float] | None
Callback = Callable[[dict], bool | None]


# ------------------------------------------------------------------ shared helpers
def _check_data(x: torch.Tensor, y: torch.Tensor, name: str, model: nn.Module, metric: Metric) -> None:
    """Validate a data set before any training maths (shapes, finiteness, labels)."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError("inputs and targets must be torch tensors", source=name)
    if x.dim() != 2:
        raise ShapeError(f"{name}: inputs must be (n_samples, n_features), got shape {tuple(x.shape)}")
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ShapeError(f"{name}: {x.shape[0]} inputs but targets of shape {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise DataError("no samples", source=name)
    for what, t in (("inputs", x), ("targets", y)):
        if t.is_floating_point():
            bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
            if bad.any():
                row = int(torch.nonzero(bad)[0])
                raise DataError(f"row {row} is not finite ({int(bad.sum())} bad rows)", source=name, field=what)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None and x.is_floating_point() and x.dtype != param.dtype:
        raise DataError(f"inputs are {x.dtype} but the model's parameters are {param.dtype}", source=name)
    in_features = getattr(model, "in_features", None)
    if in_features is not None and x.shape[1] != in_features:
        raise ShapeError(f"{name}: the model takes {in_features} features, the inputs have {x.shape[1]}")
    out_features = getattr(model, "out_features", None)
    if metric == "accuracy":
        if y.dim() != 1 or y.is_floating_point():
            raise ShapeError(f"{name}: accuracy needs integer class labels of shape (n,), "
                             f"got {y.dtype} {tuple(y.shape)}")
        if out_features is not None and (int(y.min()) < 0 or int(y.max()) >= out_features):
            raise DataError(f"class labels must lie in [0, {out_features}), got [{int(y.min())}, {int(y.max())}]",
                            source=name, field="targets")
    elif metric == "rmse" and out_features is not None and y.reshape(y.shape[0], -1).shape[1] != out_features:
        raise ShapeError(f"{name}: the model predicts {out_features} values per sample, "
                         f"targets have shape {tuple(y.shape)}")


def _metric_value(metric: Metric, pred: torch.Tensor, y: torch.Tensor) -> float | None:
    if metric is None:
        return None
    if metric == "accuracy":
        return float((pred.argmax(dim=-1) == y).double().mean())
    if metric == "rmse":
        return float(torch.sqrt(torch.mean((pred.reshape(y.shape) - y) ** 2)))
    return float(metric(pred, y))


def _check_metric(metric: Metric) -> None:
    if not (metric is None or callable(metric) or metric in ("accuracy", "rmse")):
        raise ConfigError(f"metric must be 'accuracy', 'rmse', None or a callable, got {metric!r}")


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, metric: Metric = None,
             chunk: int = 8192) -> tuple[float, float | None]:
    """``(loss, metric)`` of ``model`` on ``(x, y)``, predicting in chunks of ``chunk`` samples."""
    pred = torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    return float(loss_fn(pred, y)), _metric_value(metric, pred, y)


def layer_spectra(model: nn.Module) -> list[dict]:
    """Schmidt values and von Neumann entropies (nats) at every bond of every MPO layer.

    Computed by :meth:`entangle.tn.MPO.schmidt_spectra` of the layer's weight (as a vector, the
    paper's Sec. III D); singular values are not normalised, entropies use ``p = s² / Σ s²``.
    """
    out = []
    for name, m in model.named_modules():
        if isinstance(m, MPOLinear):
            spectra = m.mpo.detach().schmidt_spectra()
            out.append({"layer": name, "bond_dims": m.bond_dims,
                        "singular_values": [s.tolist() for s in spectra],
                        "entropies": [float(von_neumann_entropy(s)) for s in spectra]})
    return out


class _Batches:
    """Endless stream of mini-batches drawn without replacement from shuffled epochs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator):
        self.x, self.y, self.gen = x, y, generator
        self.n = x.shape[0]
        self.size = self.n if batch_size is None else min(batch_size, self.n)
        self.perm, self.pos = None, self.n

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == self.n:
            return self.x, self.y
        if self.pos + self.size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.size]
        self.pos += self.size
        return self.x[idx], self.y[idx]


def _check_positive(value, what: str, integer: bool = False, allow_none: bool = False):
    if value is None and allow_none:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a {'positive integer' if integer else 'finite number > 0'}, got {value!r}")


def _make_optimizer(kind, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer | None:
    if not params:
        return None
    if callable(kind):
        return kind(params)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ConfigError(f"dense_optimizer must be 'sgd', 'adam' or a callable params -> Optimizer, got {kind!r}")


# ------------------------------------------------------------------------- sweeper
class DMRGSweeper:
    """DMRG-like two-site sweeping trainer for networks containing :class:`MPOLinear` layers.

    Parameters
    ----------
    model : any ``nn.Module`` containing one or more :class:`MPOLinear` (e.g. a
        :class:`~entangle.models.tnn.TNNetwork`). Cores are updated by sweeps; every other
        parameter with ``requires_grad`` ("dense parameters", MPO biases included) by
        ``dense_optimizer``.
    loss_fn : ``loss_fn(model(x), y) -> scalar``.
    lr : local learning rate ``α`` of the bond update (paper: 0.1 with ``local_step="gd"``).
    max_bond, cutoff : truncation of every SVD split (``cutoff`` relative to the largest value).
    strategy : ``"pal"`` or ``"lbl"`` (see the module docstring).
    n_sweeps : default number of sweeps of :meth:`fit`.
    layer_sweeps : sweeps per MPO layer and LbL pass (the paper uses up to 10).
    local_step : ``"gd"`` (paper, plain LGD) or ``"rms"`` (RMS-normalised step, see module docs).
    beta : decay of the running mean square of ``local_step="rms"``.
    dense_optimizer : ``"sgd"`` (Eq. 8, default), ``"adam"``, or ``callable(params) -> Optimizer``.
    dense_lr : learning rate of the dense optimiser (default ``lr``).
    lr_schedule : ``"constant"``, ``"cosine"`` (both rates fall from their value to 1 % of it over
        the sweeps of one :meth:`fit` call, ``f = 0.01 + 0.99 (1 + cos(π s / n)) / 2``), or
        ``callable(s, n) -> factor`` for sweep ``s = 0 .. n-1``.
    batch_size : mini-batch size of each bond update (default: the full data set, as in the paper).
    metric : ``"accuracy"`` (integer labels), ``"rmse"``, None, or ``callable(pred, y) -> float``.
    seed : seeds the mini-batch order.
    progress : show a tqdm bar over sweeps.
    callback : called with each sweep record; returning True stops training.

    Attributes
    ----------
    history : list of JSON-serialisable dicts, one per sweep: ``sweep``, ``loss``, ``metric``,
        ``val_loss``, ``val_metric``, ``time_s`` (cumulative wall time), ``n_updates``,
        ``discarded`` (root sum of squares of the truncated singular values of that sweep), and
        ``layers``: per MPO layer ``bond_dims``, ``singular_values`` (per bond) and ``entropies``.

    >>> import torch
    >>> from entangle.models.tnn import Dense, TNLayer, build_tnn
    >>> net = build_tnn([Dense(8, trainable=False), TNLayer(8, n_mpo=3, bond_dim=2), Dense(1)], in_features=1,
    ...                 dtype="float64")
    >>> x = torch.linspace(0, 1, 32, dtype=torch.float64)[:, None]
    >>> sweeper = DMRGSweeper(net, lambda p, y: ((p - y) ** 2).mean(), lr=0.1, max_bond=4, metric="rmse")
    >>> history = sweeper.fit(x, 2 * x, n_sweeps=3)
    >>> len(history), history[-1]["layers"][0]["bond_dims"]
    (3, [4, 4])
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, *, lr: float = 0.1, max_bond: int = 8,
                 cutoff: float | None = None, strategy: str = "pal", n_sweeps: int = 100, layer_sweeps: int = 2,
                 local_step: str = "gd", beta: float = 0.99, dense_optimizer="sgd", dense_lr: float | None = None,
                 lr_schedule: str | Callable[[int, int], float] = "constant", batch_size: int | None = None,
                 metric: Metric = None, seed: int = 0, progress: bool = False, callback: Callback | None = None):
        _check_positive(lr, "lr")
        _check_positive(max_bond, "max_bond", integer=True)
        _check_positive(n_sweeps, "n_sweeps", integer=True)
        _check_positive(layer_sweeps, "layer_sweeps", integer=True)
        _check_positive(batch_size, "batch_size", integer=True, allow_none=True)
        _check_positive(dense_lr, "dense_lr", allow_none=True)
        if cutoff is not None and not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff >= 0):
            raise ConfigError(f"cutoff must be None or a finite number >= 0, got {cutoff!r}")
        if strategy not in ("pal", "lbl"):
            raise ConfigError(f"strategy must be 'pal' (partial all layers) or 'lbl' (layer by layer), "
                              f"got {strategy!r}")
        if local_step not in ("gd", "rms"):
            raise ConfigError(f"local_step must be 'gd' (plain LGD) or 'rms', got {local_step!r}")
        if not (callable(lr_schedule) or lr_schedule in ("constant", "cosine")):
            raise ConfigError(f"lr_schedule must be 'constant', 'cosine' or callable(sweep, n_sweeps), "
                              f"got {lr_schedule!r}")
        if not 0 <= beta < 1:
            raise ConfigError(f"beta must lie in [0, 1), got {beta!r}")
        _check_metric(metric)
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MPOLinear)]
        if not self.layers:
            raise ConfigError("DMRGSweeper: the model has no MPOLinear layer to sweep")
        for name, m in self.layers:
            if m.n_sites < 2:
                raise ConfigError(f"DMRGSweeper: layer {name!r} has {m.n_sites} site; sweeps need >= 2")
        self.model, self.loss_fn = model, loss_fn
        self.lr, self.max_bond, self.cutoff = float(lr), max_bond, cutoff
        self.strategy, self.n_sweeps, self.layer_sweeps = strategy, n_sweeps, layer_sweeps
        self.local_step, self.beta = local_step, beta
        self.dense_optimizer_kind, self.dense_lr = dense_optimizer, float(dense_lr if dense_lr is not None else lr)
        self.lr_schedule = lr_schedule
        self.batch_size, self.metric, self.seed = batch_size, metric, seed
        self.progress, self.callback = progress, callback
        self.history: list[dict] = []
        self._rms: dict[tuple[str, int], tuple[float, int]] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self._dense_params: list[nn.Parameter] | None = None
        self._discarded_sq = 0.0
        self._updates = 0
        self._lr_now = self.lr

    # ---------------------------------------------------------------- public API
    def fit(self, x: torch.Tensor, y: torch.Tensor, n_sweeps: int | None = None, x_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None) -> list[dict]:
        """Run ``n_sweeps`` sweeps on ``(x, y)``; returns (and extends) :attr:`history`.

        Data are validated first (finite values, matching shapes, label range for accuracy).
        Calling ``fit`` again continues training where it stopped.
        """
        n_sweeps = self.n_sweeps if n_sweeps is None else n_sweeps
        _check_positive(n_sweeps, "n_sweeps", integer=True)
        _check_data(x, y, "training data", self.model, self.metric)
        if (x_val is None) != (y_val is None):
            raise ConfigError("give both x_val and y_val, or neither")
        if x_val is not None:
            _check_data(x_val, y_val, "validation data", self.model, self.metric)
        trainable = self._freeze_cores()
        try:
            if self._dense_params is None:
                self._dense_params = [p for p in self.model.parameters() if p.requires_grad]
                self._optimizer = _make_optimizer(self.dense_optimizer_kind, self._dense_params, self.dense_lr)
            batches = _Batches(x, y, self.batch_size, torch.Generator().manual_seed(self.seed + len(self.history)))
            start = time.perf_counter() - (self.history[-1]["time_s"] if self.history else 0.0)
            bar = tqdm(range(n_sweeps), disable=not self.progress, desc=f"sweeps ({self.strategy})", leave=False)
            for s in bar:
                self._set_rates(s, n_sweeps)
                self._discarded_sq, self._updates = 0.0, 0
                self.model.train()
                if self.strategy == "pal":
                    for name, layer in self.layers:
                        if trainable[name]:
                            self._sweep_layer(name, layer, batches, self._dense_params)
                else:
                    self._lbl_pass(batches, trainable)
                record = self._record(x, y, x_val, y_val, time.perf_counter() - start)
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4g}",
                                **({} if record["metric"] is None else {"metric": f"{record['metric']:.4g}"}))
                if self.callback is not None and self.callback(record):
                    break
        finally:
            for name, layer in self.layers:  # restore the caller's requires_grad
                for core in layer.cores:
                    core.requires_grad_(trainable[name])
        return self.history

    # ------------------------------------------------------------------ internals
    def _set_rates(self, s: int, n: int) -> None:
        if callable(self.lr_schedule):
            factor = float(self.lr_schedule(s, n))
        elif self.lr_schedule == "cosine":
            factor = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / n))
        else:
            factor = 1.0
        if not (math.isfinite(factor) and factor > 0):
            raise ConfigError(f"lr_schedule gave factor {factor} at sweep {s}; it must be finite and > 0")
        self._lr_now = self.lr * factor
        if self._optimizer is not None:
            for group in self._optimizer.param_groups:
                group["lr"] = self.dense_lr * factor

    def _freeze_cores(self) -> dict[str, bool]:
        """Take the cores out of autograd (sweeps differentiate bond tensors only); returns which
        layers had trainable cores. Layers whose cores the caller froze are not swept."""
        trainable = {name: any(c.requires_grad for c in layer.cores) for name, layer in self.layers}
        if not any(trainable.values()):
            raise ConfigError("DMRGSweeper: every MPOLinear layer has frozen cores (requires_grad=False)")
        for _, layer in self.layers:
            for core in layer.cores:
                core.requires_grad_(False)
        return trainable

    def _lbl_pass(self, batches: _Batches, trainable: dict[str, bool]) -> None:
        mpo_names = {name for name, _ in self.layers}
        for name, module in self.model.named_modules():
            if any(name.startswith(m + ".") for m in mpo_names):
                continue  # the cores' ParameterList of an MPO layer
            if isinstance(module, MPOLinear):
                own = [module.bias] if module.bias is not None and module.bias.requires_grad else []
                for _ in range(self.layer_sweeps if trainable[name] else 0):
                    self._sweep_layer(name, module, batches, own)
                continue
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if params:
                xb, yb = next(batches)
                loss = self.loss_fn(self.model(xb), yb)
                self._check_loss(loss)
                self._dense_step(params, torch.autograd.grad(loss, params))

    def _sweep_layer(self, name: str, layer: MPOLinear, batches: _Batches, dense: list[nn.Parameter]) -> None:
        # Orthogonality centre on site 0; then it rides along: right-moving, left-moving.
        layer.set_cores(layer.mpo.detach().canonicalize(0).cores)
        n = layer.n_sites
        for k in range(n - 1):
            self._pair_update(name, layer, k, "right", batches, dense)
        for k in range(n - 2, -1, -1):
            self._pair_update(name, layer, k, "left", batches, dense)

    def _pair_update(self, name: str, layer: MPOLinear, k: int, direction: str, batches: _Batches,
                     dense: list[nn.Parameter]) -> None:
        xb, yb = next(batches)
        cores = list(layer.cores)
        theta = merge(cores[k].detach(), cores[k + 1].detach()).requires_grad_(True)  # (a)
        with layer.substitute_pair(k, theta):
            loss = self.loss_fn(self.model(xb), yb)
        self._check_loss(loss)
        grads = torch.autograd.grad(loss, [theta, *dense], allow_unused=True)  # (b)
        theta_new = theta.detach() - self._local_step(name, k, grads[0])  # (c)
        # (d)-(f): the singular values move on with the sweep (absorb towards the next site)
        a, b, _, discarded = split(theta_new, 2, self.max_bond, self.cutoff,
                                   absorb="right" if direction == "right" else "left")
        cores[k], cores[k + 1] = a, b
        layer.set_cores(cores)
        self._discarded_sq += float(discarded) ** 2
        self._updates += 1
        if dense:
            self._dense_step(dense, grads[1:])

    def _local_step(self, name: str, k: int, grad: torch.Tensor) -> torch.Tensor:
        if self.local_step == "gd":
            return self._lr_now * grad
        v, t = self._rms.get((name, k), (0.0, 0))
        v, t = self.beta * v + (1 - self.beta) * float(torch.mean(grad**2)), t + 1
        self._rms[(name, k)] = (v, t)
        return self._lr_now * grad / (math.sqrt(v / (1 - self.beta**t)) + 1e-12)

    def _dense_step(self, params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None]) -> None:
        self._optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        self._optimizer.step()

    def _check_loss(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise ConfigError(f"the loss became {float(loss.detach())} during sweep {len(self.history) + 1}; "
                              f"lower lr (now {self.lr}) or dense_lr (now {self.dense_lr})")

    def _record(self, x, y, x_val, y_val, elapsed: float) -> dict:
        self.model.eval()
        loss, metric = evaluate(self.model, self.loss_fn, x, y, self.metric)
        val_loss, val_metric = (None, None) if x_val is None else evaluate(self.model, self.loss_fn, x_val, y_val,
                                                                          self.metric)
        return {"sweep": len(self.history) + 1, "loss": loss, "metric": metric, "val_loss": val_loss,
                "val_metric": val_metric, "time_s": elapsed, "n_updates": self._updates,
                "discarded": math.sqrt(self._discarded_sq), "layers": layer_spectra(self.model)}


# ------------------------------------------------------------------- Adam baseline
def train_adam(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, lr: float = 1e-2,
               epochs: int = 1000, batch_size: int | None = None, metric: Metric = None,
               x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, seed: int = 0,
               record_every: int = 1, progress: bool = False, callback: Callback | None = None) -> list[dict]:
    """Train every parameter with ``requires_grad`` (MPO cores included) by Adam and autodiff.

    Bond dimensions stay fixed. One epoch is one pass over the data in mini-batches of
    ``batch_size`` (default: the whole set, one step per epoch). Every ``record_every`` epochs a
    record like :attr:`DMRGSweeper.history`'s is appended (``epoch`` instead of ``sweep``);
    ``callback(record)`` returning True stops training. Returns the records.
    """
    _check_positive(lr, "lr")
    _check_positive(epochs, "epochs", integer=True)
    _check_positive(record_every, "record_every", integer=True)
    _check_positive(batch_size, "batch_size", integer=True, allow_none=True)
    _check_metric(metric)
    _check_data(x, y, "training data", model, metric)
    if (x_val is None) != (y_val is None):
        raise ConfigError("give both x_val and y_val, or neither")
    if x_val is not None:
        _check_data(x_val, y_val, "validation data", model, metric)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("train_adam: the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=lr)
    batches = _Batches(x, y, batch_size, torch.Generator().manual_seed(seed))
    steps_per_epoch = math.ceil(x.shape[0] / batches.size)
    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), disable=not progress, desc="adam", leave=False)
    for epoch in bar:
        model.train()
        for _ in range(steps_per_epoch):
            xb, yb = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if not torch.isfinite(loss):
                raise ConfigError(f"the loss became {float(loss.detach())} in epoch {epoch}; lower lr (now {lr})")
            loss.backward()
            optimizer.step()
        if epoch % record_every and epoch != epochs:
            continue
        model.eval()
        tr_loss, tr_metric = evaluate(model, loss_fn, x, y, metric)
        val_loss, val_metric = (None, None) if x_val is None else evaluate(model, loss_fn, x_val, y_val, metric)
        record = {"epoch": epoch, "loss": tr_loss, "metric": tr_metric, "val_loss": val_loss, "val_metric": val_metric,
                  "time_s": time.perf_counter() - start, "layers": layer_spectra(model)}
        history.append(record)
        bar.set_postfix(loss=f"{tr_loss:.4g}")
        if callback is not None and callback(record):
            break
    return history
