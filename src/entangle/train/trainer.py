"""Training of interatomic potentials (ETN): L-BFGS full batch or Adam mini-batches.

* loss of eq. (47) (:mod:`entangle.train.losses`), summed over batches and divided by the
  number of training structures;
* the pair geometry of every batch (harmonics, radial functions, eq. (38) descriptors and the
  pair Jacobian, :class:`~entangle.models.etn.ETNGeometry`) is computed once and reused by
  every evaluation; the model's descriptor standardisation is fitted to the training data
  before the first step;
* L-BFGS with a strong-Wolfe line search, one quasi-Newton iteration per step (the loss
  and gradient at the start of a step are reused from the line search that ended there);
* validation after every iteration/epoch, early stopping when the validation loss has not
  improved for ``patience`` evaluations, the best parameters are restored at the end (the paper
  "selects the minimal validation loss from all the iterations", Sec. 6.2);
* checkpoints ``checkpoint.safetensors`` + ``checkpoint.json`` (atomic writes) every
  ``checkpoint_every`` steps; ``resume=True`` continues from them (Adam moments and the
  parameter average are restored, the L-BFGS curvature memory is rebuilt);
* Adam options as in the MLIP codes: an exponential moving average of the parameters
  (``ema_decay``) is what is validated and kept, and gradient-norm clipping
  (``clip_grad_norm``);
* a tqdm progress bar with live train/validation errors.

Also :func:`fit_etn` / :func:`evaluate_etn`, the functions behind ``entangle fit`` and
``entangle evaluate`` for ETN potentials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from entangle import io
from entangle.data.atoms import AtomsBatch, Dataset, Structure
from entangle.data.neighbours import Neighbours, neighbour_list
from entangle.errors import ConfigError, DataError, check_keys
from entangle.models.etn import ETNConfig, ETNGeometry, ETNPotential
from entangle.train.losses import ErrorAccumulator, LossWeights, potential_loss

__all__ = ["TrainConfig", "Trainer", "PreparedBatch", "prepare_batches", "predict_batch",
           "fit_reference_energies", "ETNSetup", "etn_setup", "fit_etn", "stratified_split",
           "evaluate_etn", "evaluate_model", "evaluate_structures", "mean_neighbours"]


_MAX_LINE_SEARCH = 25  # function evaluations per L-BFGS line search


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes
    ----------
    optimizer : "lbfgs" (full batch, strong-Wolfe line search) or "adam" (mini-batches)
    max_steps : L-BFGS iterations or Adam epochs
    lr : learning rate (Adam) or initial step (L-BFGS)
    lr_decay : Adam only: the learning rate of epoch k is ``lr * lr_decay**k`` (1: constant);
        set from the step count, so a resumed run continues the same schedule
    batch_size : structures per batch (also used to chunk the full-batch L-BFGS evaluation)
    weights : loss weights of eq. (47)
    patience : stop after this many validation checks without improvement
    checkpoint_every : steps between checkpoints (0: never)
    seed : seed of the mini-batch order
    progress : show a tqdm bar
    max_time_s : stop after this much wall time (None: no limit)
    standardize : fit the model's descriptor standardisation to the training data before the
        first step (:meth:`~entangle.models.etn.ETNPotential.standardize`)
    device : where the model and the prepared batches live during training (``"cpu"``,
        ``"cuda"``); checkpoints and the saved model are always on the CPU
    dtype : precision of the training arithmetic (None: the model's own); ``"float32"``
        trains a float64 model in single precision, 3-4x faster per Adam epoch on the CPU,
        and returns it to float64 afterwards (the fitted function is then evaluated in
        float64: smooth forces and energy conservation in MD are unaffected)
    ema_decay : Adam only: validate, select and return an exponential moving average of the
        parameters, ``θ̄ ← ema_decay θ̄ + (1 - ema_decay) θ`` after every mini-batch step (as
        the MLIP codes do, e.g. MACE's 0.99), which smooths the mini-batch noise out of the
        model that is kept (None: the raw parameters)
    clip_grad_norm : Adam only: rescale each mini-batch gradient to at most this Euclidean
        norm before the step (None: no clipping)
    polish_steps : Adam only: after the Adam epochs, this many full-batch L-BFGS iterations
        (lr 1, the model's own precision) from the best (averaged) Adam parameters, run by
        :func:`fit_etn`; the Adam stage's best is kept unless the polish beats it on
        validation (0: no polish)
    polish_time_s : wall-time limit of the polish (``max_time_s`` limits the Adam stage)
    """

    optimizer: str = "lbfgs"
    max_steps: int = 200
    lr: float = 1.0
    lr_decay: float = 1.0
    batch_size: int = 32
    weights: LossWeights = field(default_factory=LossWeights)
    patience: int = 50
    checkpoint_every: int = 20
    seed: int = 0
    progress: bool = True
    max_time_s: float | None = None
    standardize: bool = True
    device: str = "cpu"
    dtype: str | None = None
    ema_decay: float | None = None
    clip_grad_norm: float | None = None
    polish_steps: int = 0
    polish_time_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        if self.optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        for name in ("max_steps", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1) or null, got {self.ema_decay}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")
        if self.optimizer != "adam" and (self.ema_decay is not None
                                         or self.clip_grad_norm is not None
                                         or self.polish_steps):
            raise ConfigError("ema_decay, clip_grad_norm and polish_steps act on Adam's "
                              f"mini-batch steps; optimizer is {self.optimizer!r}")
        if int(self.polish_steps) < 0:
            raise ConfigError(f"polish_steps must be >= 0, got {self.polish_steps}")
        if self.polish_time_s is not None and not self.polish_time_s > 0:
            raise ConfigError(f"polish_time_s must be > 0 or null, got {self.polish_time_s}")
        if self.dtype not in (None, *io.DTYPES):
            raise ConfigError(f"dtype must be one of {sorted(io.DTYPES)} or null, "
                              f"got {self.dtype!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda', "
                              f"got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r}: PyTorch sees no CUDA GPU here")


class PreparedBatch:
    """A batch of structures with its neighbour list, and the parameter-independent pair
    geometry (:class:`~entangle.models.etn.ETNGeometry`) of every model evaluated on it, so
    that repeated evaluations (optimiser iterations) skip the pair basis entirely."""

    def __init__(self, batch: AtomsBatch, neighbours: Neighbours, n_structures: int):
        self.batch, self.neighbours, self.n_structures = batch, neighbours, n_structures
        self._geometry: dict[tuple, ETNGeometry] = {}

    def geometry(self, model: ETNPotential, derivatives: bool = True) -> ETNGeometry:
        """The geometry of this batch for ``model`` (cached per radial/angular setup), with
        the pair Jacobian stored when ``derivatives`` (forces/stress)."""
        c = model.config
        key = (tuple(c.species), c.r_cut, c.r_min, c.n_rad, c.L, c.decay_rad, model.dtype)
        have = self._geometry.get(key)
        if have is None or (derivatives and not have.has_derivatives):
            have = model.geometry(self.batch, self.neighbours, derivatives=derivatives,
                                  jacobian=True)
            self._geometry[key] = have
        return have


def prepare_batches(data: Sequence[Structure], cutoff: float, batch_size: int,
                    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                    ) -> list[PreparedBatch]:
    """Split ``data`` into batches with neighbour lists computed once (on the CPU by vesin,
    then moved to ``device``)."""
    items = list(data)
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = AtomsBatch.from_structures(chunk, dtype=dtype)
        nbrs = neighbour_list(batch, cutoff)
        nbrs = dataclasses.replace(nbrs, centers=nbrs.centers.to(device),
                                   neighbors=nbrs.neighbors.to(device),
                                   shifts=nbrs.shifts.to(device),
                                   structure=nbrs.structure.to(device))
        out.append(PreparedBatch(batch.to(device=device), nbrs, len(chunk)))
    return out


def predict_batch(model: ETNPotential, item: PreparedBatch, *, forces: bool = True,
                  stress: bool = False, cores: Sequence[torch.Tensor] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Model outputs on a prepared batch (geometry reused; differentiable if grad is on)."""
    geom = item.geometry(model, derivatives=forces or stress)
    return model.evaluate(geom, forces=forces, stress=stress, cores=cores)


def fit_reference_energies(data: Sequence[Structure], species: Sequence[int]) -> list[float]:
    """Least-squares per-species energies ``E ≈ Σ_s n_s e_s`` (the "averaged" references)."""
    counts = np.array([[np.sum(s.numbers == z) for z in species] for s in data if
                       s.energy is not None], dtype=np.float64)
    energies = np.array([s.energy for s in data if s.energy is not None])
    if energies.size == 0:
        raise DataError("no energies to fit reference energies to")
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return [float(e) for e in solution]


def mean_neighbours(data: Sequence[Structure], cutoff: float, limit: int = 50) -> float:
    """Average number of neighbours within ``cutoff`` over (up to ``limit``) structures."""
    items = list(data)[:limit]
    nbrs = neighbour_list(items, cutoff)
    n_atoms = sum(s.n_atoms for s in items)
    return max(1.0, len(nbrs) / n_atoms)


@torch.no_grad()
def _accumulate(model: ETNPotential, batches: Sequence[PreparedBatch], weights: LossWeights,
                acc: ErrorAccumulator, stress: bool | None = None) -> tuple[float, int]:
    """Add the errors of ``model`` on ``batches`` to ``acc``; returns (summed loss, structures)."""
    total, n = 0.0, 0
    for item in batches:
        want_stress = bool(item.batch.stress_mask.any()) if stress is None else stress
        pred = predict_batch(model, item, forces=True, stress=want_stress)
        loss, _ = potential_loss(pred, item.batch, weights)
        total += float(loss)
        n += item.n_structures
        acc.add(pred, item.batch)
    return total, n


def evaluate_model(model: ETNPotential, batches: Sequence[PreparedBatch], weights: LossWeights,
                   stress: bool | None = None) -> dict[str, Any]:
    """Loss (per structure) and error metrics of ``model`` on prepared batches."""
    acc = ErrorAccumulator()
    total, n = _accumulate(model, batches, weights, acc, stress)
    return {"loss": total / max(n, 1), **acc.result()}


def evaluate_structures(model: ETNPotential, data: Sequence[Structure], weights: LossWeights,
                        batch_size: int = 32, overall: ErrorAccumulator | None = None
                        ) -> dict[str, Any]:
    """:func:`evaluate_model` on structures, plus ``by_config_type`` when they carry more than
    one ``config_type`` (structures without one are grouped as ``"unlabelled"``): the same
    metrics and ``n_structures`` per group, as MLIP users compare AIMD, surfaces, vacancies
    and strained cells separately (a few surface cells can dominate a test MAE).

    ``overall``: an accumulator to fill (e.g. one that keeps the values for a parity plot).
    """
    groups: dict[str, list[Structure]] = {}
    for s in data:
        groups.setdefault(s.config_type or "unlabelled", []).append(s)
    r_cut, dtype = model.config.r_cut, model.dtype
    overall = ErrorAccumulator() if overall is None else overall
    total, n, by_type = 0.0, 0, {}
    for kind in sorted(groups):
        acc = ErrorAccumulator(keep_values=overall.keep_values)
        loss, count = _accumulate(
            model, prepare_batches(groups[kind], r_cut, batch_size, dtype), weights, acc)
        total, n = total + loss, n + count
        overall.merge(acc)
        by_type[kind] = {"n_structures": count, **acc.result()}
    result = {"loss": total / max(n, 1), **overall.result()}
    if len(groups) > 1:
        result["by_config_type"] = by_type
    return result


class Trainer:
    """Fits an :class:`ETNPotential` to labelled structures.

    Parameters
    ----------
    model : ETNPotential
    train, valid : sequences of Structure (valid may be empty: no early stopping)
    config : TrainConfig
    out_dir : directory for checkpoints (None: no checkpoints)
    start_from : a trained smaller ETN embedded in ``model`` before the first step, after the
        standardisation (:meth:`~entangle.models.etn.ETNPotential.embed`)
    """

    def __init__(self, model: ETNPotential, train: Sequence[Structure],
                 valid: Sequence[Structure], config: TrainConfig,
                 out_dir: str | Path | None = None, start_from: ETNPotential | None = None):
        self.model, self.config = model.to(config.device), config
        self.start_from = start_from
        self.model_dtype = model.dtype
        if config.dtype is not None:
            model.to(io.DTYPES[config.dtype])
        dtype = model.dtype
        cutoff = model.config.r_cut
        if not len(train):
            raise DataError("empty training set")
        self.train = prepare_batches(train, cutoff, config.batch_size, dtype, config.device)
        self.valid = prepare_batches(valid, cutoff, config.batch_size, dtype, config.device) \
            if len(valid) else []
        self.n_train = len(train)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.stress = config.weights.stress > 0
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.best_loss = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since_best = 0
        # moving average of the trainable parameters (ema_decay), in their order
        self.ema: list[torch.Tensor] | None = None
        # (parameters, loss, gradients) of the latest full-batch evaluations (L-BFGS)
        self._evaluations: deque[tuple[torch.Tensor, torch.Tensor, list]] = deque(
            maxlen=_MAX_LINE_SEARCH + 1)

    # ------------------------------------------------------------------ loss
    def _loss(self, batches: Sequence[PreparedBatch]) -> torch.Tensor:
        total = 0.0
        for item in batches:
            pred = predict_batch(self.model, item, forces=self.config.weights.forces > 0,
                                 stress=self.stress and bool(item.batch.stress_mask.any()))
            loss, _ = potential_loss(pred, item.batch, self.config.weights)
            total = total + loss
        return total / self.n_train

    def _full_batch_closure(self, optimizer: torch.optim.Optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def closure() -> torch.Tensor:
            # torch's L-BFGS evaluates the closure at the start of every step() although the
            # previous step's line search has already evaluated it at that very point (one
            # quasi-Newton iteration per step, max_iter=1): reuse the loss and gradient of a
            # recently evaluated, bitwise identical parameter vector (about half the cost of
            # an iteration)
            point = torch.cat([p.detach().reshape(-1) for p in params])
            for seen, value, grads in self._evaluations:
                if torch.equal(seen, point):
                    for p, g in zip(params, grads):
                        p.grad = None if g is None else g.clone()
                    return value.clone()
            optimizer.zero_grad()
            total = torch.zeros((), dtype=self.model.dtype, device=self.config.device)
            for item in self.train:  # accumulate gradients batch by batch (memory)
                loss = self._loss([item])
                loss.backward()
                total = total + loss.detach()
            self._evaluations.append(
                (point, total.clone(), [None if p.grad is None else p.grad.detach().clone()
                                        for p in params]))
            return total
        return closure

    # ------------------------------------------------------------------ checkpoints
    def _state_tensors(self, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        if self.ema is not None:
            tensors.update({f"ema.{i}": e.detach().clone() for i, e in enumerate(self.ema)})
        if isinstance(optimizer, torch.optim.Adam):
            for i, p in enumerate(self.model.parameters()):
                st = optimizer.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        tensors[f"adam.{i}.{key}"] = st[key].detach().clone()
                if "step" in st:
                    tensors[f"adam.{i}.step"] = torch.as_tensor(st["step"]).reshape(1).double()
        return {k: v.contiguous().cpu() for k, v in tensors.items()}

    def save_checkpoint(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Write ``checkpoint.safetensors`` and ``checkpoint.json`` atomically."""
        if self.out_dir is None:
            return
        blob = st_save(self._state_tensors(optimizer))
        meta = {"step": self.step, "best_loss": self.best_loss, "since_best": self.since_best,
                "history": self.history, "model_config": dataclasses.asdict(self.model.config),
                "train_config": dataclasses.asdict(self.config)}
        io.atomic_write_bytes(self.out_dir / "checkpoint.safetensors", blob)
        io.atomic_write_text(self.out_dir / "checkpoint.json", json.dumps(meta, indent=1))

    def load_checkpoint(self, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Restore a checkpoint from ``out_dir`` if there is one; returns whether it did."""
        if self.out_dir is None or not (self.out_dir / "checkpoint.json").exists():
            return False
        meta = json.loads((self.out_dir / "checkpoint.json").read_text())
        tensors = {k: v.to(self.config.device) for k, v in
                   st_load((self.out_dir / "checkpoint.safetensors").read_bytes()).items()}
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                    if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        params = self._trainable()
        if all(f"ema.{i}" in tensors for i in range(len(params))):
            self.ema = [tensors[f"ema.{i}"].to(p.dtype) for i, p in enumerate(params)]
        self.step, self.best_loss = meta["step"], meta["best_loss"]
        self.since_best, self.history = meta["since_best"], meta["history"]
        if isinstance(optimizer, torch.optim.Adam):
            for i, p in enumerate(self.model.parameters()):
                if f"adam.{i}.exp_avg" in tensors:
                    optimizer.state[p] = {
                        "step": torch.tensor(float(tensors[f"adam.{i}.step"][0])),
                        "exp_avg": tensors[f"adam.{i}.exp_avg"].to(p.dtype),
                        "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].to(p.dtype)}
        return True

    # ------------------------------------------------------------------ main loop
    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def _averaged_parameters(self) -> Iterator[None]:
        """Inside, the model holds the moving average of its parameters (``ema_decay``)."""
        if self.ema is None:
            yield
            return
        params = self._trainable()
        raw = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(params, raw):
                    p.copy_(r)

    def _validate(self, train_loss: float) -> dict[str, Any]:
        record: dict[str, Any] = {"step": self.step, "train_loss": train_loss}
        with self._averaged_parameters():
            if self.valid:
                metrics = evaluate_model(self.model, self.valid, self.config.weights,
                                         self.stress)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                current = metrics["loss"]
            else:
                current = train_loss
            if current < self.best_loss:
                self.best_loss, self.since_best = current, 0
                self.best_state = {k: v.detach().clone()
                                   for k, v in self.model.state_dict().items()}
            else:
                self.since_best += 1
        record["time"] = time.time()
        self.history.append(record)
        return record

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run the optimisation; returns the history (one record per validation)."""
        cfg = self.config
        params = self._trainable()

        def lbfgs() -> torch.optim.Optimizer:
            # one quasi-Newton iteration per step (validation in between); torch hands the
            # line search ``max_eval`` minus the evaluations already made, so max_eval must be
            # set explicitly: its default (1.25 max_iter = 1) leaves the strong-Wolfe search no
            # evaluation at all and a rejected first trial step silently becomes a zero step
            return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=1, max_eval=1 + _MAX_LINE_SEARCH,
                                     history_size=50, line_search_fn="strong_wolfe",
                                     tolerance_grad=1e-12, tolerance_change=1e-14)

        if cfg.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr)
        else:
            optimizer = lbfgs()
        previous, restarts = math.inf, 0
        self._evaluations.clear()
        if resume:
            self.load_checkpoint(optimizer)
        if self.step == 0 and cfg.standardize:
            derivatives = cfg.weights.forces > 0 or self.stress
            self.model.standardize([item.geometry(self.model, derivatives=derivatives)
                                    for item in self.train])
        if self.step == 0 and self.start_from is not None:
            self.model.embed(self.start_from)
        if cfg.ema_decay is None:
            self.ema = None
        elif self.ema is None:  # a fresh start, or resuming a run without an average
            self.ema = [p.detach().clone() for p in params]
        generator = np.random.default_rng(cfg.seed + self.step)
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not cfg.progress,
                   desc=f"ETN {cfg.optimizer}", leave=False)
        started = time.time()
        try:
            while self.step < cfg.max_steps and self.since_best < cfg.patience and (
                    cfg.max_time_s is None or time.time() - started < cfg.max_time_s):
                if cfg.optimizer == "adam":
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * cfg.lr_decay**self.step
                    losses = []
                    for k in generator.permutation(len(self.train)):
                        optimizer.zero_grad()
                        loss = self._loss([self.train[k]])
                        loss = loss * self.n_train / self.train[k].n_structures
                        loss.backward()
                        if cfg.clip_grad_norm is not None:
                            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                        optimizer.step()
                        if self.ema is not None:
                            with torch.no_grad():
                                for e, p in zip(self.ema, params):
                                    e.lerp_(p, 1.0 - cfg.ema_decay)
                        losses.append(float(loss.detach()))
                    train_loss = float(np.mean(losses))
                else:
                    # the returned loss is the one *before* this iteration's step
                    train_loss = float(optimizer.step(self._full_batch_closure(optimizer)))
                    # no progress: the line search found no decrease along the quasi-Newton
                    # direction; restart the memory (steepest descent) and stop when even
                    # that makes no progress (converged to round-off)
                    if train_loss >= previous:
                        restarts += 1
                        if restarts > 2:
                            break
                        optimizer = lbfgs()
                    else:
                        restarts = 0
                    previous = min(previous, train_loss)
                if not math.isfinite(train_loss):
                    raise FloatingPointError(f"training loss became {train_loss} at step "
                                             f"{self.step}; lower the learning rate")
                self.step += 1
                record = self._validate(train_loss)
                bar.update(1)
                bar.set_postfix(_postfix(record))
                if self.out_dir is not None and cfg.checkpoint_every and \
                        self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint(optimizer)
        finally:
            bar.close()
            self.model.to(self.model_dtype)  # also when training fails (train.dtype)
        self.save_checkpoint(optimizer)  # the latest parameters: resume continues from them
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)  # casts to the model's dtype
        return self.history


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{record['train_loss']:.3g}"}
    if record.get("val_energy_rmse_mev_per_atom") is not None:
        out["val_E"] = f"{record['val_energy_rmse_mev_per_atom']:.2f}meV"
    if record.get("val_force_rmse_ev_per_a") is not None:
        out["val_F"] = f"{record['val_force_rmse_ev_per_a']:.3f}eV/Å"
    return out


# ---------------------------------------------------------------------------------------------
# fit / evaluate entry points
# ---------------------------------------------------------------------------------------------

def stratified_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(valid, train): ``fraction`` of every ``config_type`` (rounded, at least one structure
    of each type with two or more) in valid, chosen by a seeded permutation per type; the order
    of ``data`` is kept within both parts."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in [0, 1) for a stratified split, "
                          f"got {fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for k, s in enumerate(data):
        groups.setdefault(s.config_type, []).append(k)
    chosen: list[int] = []
    for key in sorted(groups, key=str):
        members = np.asarray(groups[key])
        n_valid = int(round(fraction * len(members)))
        if fraction > 0 and len(members) > 1:
            n_valid = min(max(n_valid, 1), len(members) - 1)
        chosen.extend(int(k) for k in rng.permutation(members)[:n_valid])
    mask = np.zeros(len(data), dtype=bool)
    mask[chosen] = True
    return data[np.flatnonzero(mask)], data[np.flatnonzero(~mask)]


def _load_data(spec: Any) -> Dataset:
    from entangle.data import load
    if isinstance(spec, (list, tuple)):
        return Dataset.concatenate([_load_data(s) for s in spec])
    if isinstance(spec, Dataset):
        return spec
    return load(spec)


@dataclass
class ETNSetup:
    """What an ETN fit config resolves to (:func:`etn_setup`)."""

    train: Dataset
    valid: Dataset
    test: Dataset | None
    model: dict[str, Any]  # ETNConfig fields, species and reference energies included
    train_config: TrainConfig
    resume: bool
    start_from: ETNPotential | None


def etn_setup(config: dict[str, Any], progress: bool = True, task: str = "etn",
              extra_keys: frozenset[str] = frozenset()) -> ETNSetup:
    """Check an ETN fit config (see :func:`fit_etn`), load its data, split off the validation
    set and fit the reference energies; ``extra_keys`` are further top-level keys the caller
    reads itself (``task``'s own section)."""
    check_keys(config, {"data", "model", "reference", "train", "init", "seed", "task",
                        "config_dir"} | extra_keys, "config")
    if config.get("task", task) != task:
        raise ConfigError(f"this fit needs task: {task}, got {config['task']!r}")
    data_cfg = dict(config.get("data", {}))
    check_keys(data_cfg, {"train", "test", "valid_fraction", "valid_size", "stratify", "seed"},
               "config.data")
    check_keys(config.get("model", {}), {f.name for f in dataclasses.fields(ETNConfig)}
               - {"species", "reference_energies", "train_reference"}, "config.model")
    check_keys(config.get("train", {}), {f.name for f in dataclasses.fields(TrainConfig)}
               | {"resume"}, "config.train")
    if "train" not in data_cfg:
        raise ConfigError("config needs data.train")
    full = _load_data(data_cfg["train"])
    frac = float(data_cfg.get("valid_fraction", 0.1))
    seed = int(data_cfg.get("seed", config.get("seed", 0)))
    valid_size = data_cfg.get("valid_size")
    if data_cfg.get("stratify", False):
        if valid_size is not None:
            raise ConfigError("data.stratify takes valid_fraction, not valid_size")
        valid, train = stratified_split(full, frac, seed)
    elif valid_size is not None:
        valid, train = full.split([int(valid_size), len(full) - int(valid_size)], seed=seed)
    else:
        valid, train = full.split([frac, 1.0 - frac], seed=seed) if frac > 0 \
            else (Dataset(), full)
    test = _load_data(data_cfg["test"]) if data_cfg.get("test") else None
    species = sorted({int(z) for s in full for z in s.numbers})
    model_cfg = dict(config.get("model", {}))
    model_cfg.setdefault("seed", seed)
    reference = config.get("reference", "fitted")
    if isinstance(reference, dict) and "isolated" in reference:
        from ase.data import atomic_numbers
        table = {(atomic_numbers[k] if isinstance(k, str) else int(k)): float(v)
                 for k, v in reference["isolated"].items()}
        missing = [z for z in species if z not in table]
        if missing:
            raise ConfigError(f"isolated-atom energies missing for Z={missing}")
        refs, trainable = [table[z] for z in species], False
    elif reference in ("fitted", "averaged"):
        refs, trainable = fit_reference_energies(train, species), reference == "fitted"
    else:
        raise ConfigError(f"reference must be 'fitted', 'averaged' or {{isolated: ...}}, "
                          f"got {reference!r}")
    start_from = None
    if config.get("init") is not None:
        start_from = io.load(config["init"])
        if not isinstance(start_from, ETNPotential):
            raise ConfigError(f"init: {config['init']} holds a {type(start_from).__name__}, "
                              "not an ETNPotential")
        model_cfg.setdefault("feature_scale", start_from.config.feature_scale)
    r_cut = float(model_cfg.get("r_cut", 5.0))
    train_options = dict(config.get("train", {}))
    resume = bool(train_options.pop("resume", False))
    train_cfg = TrainConfig(**{"progress": progress, **train_options})
    if not train_cfg.standardize:  # otherwise the descriptors are standardised instead
        model_cfg.setdefault("feature_scale", mean_neighbours(train, r_cut))
    model_cfg.update(species=species, reference_energies=refs, train_reference=trainable)
    return ETNSetup(train, valid, test, model_cfg, train_cfg, resume, start_from)


def fit_etn(config: dict[str, Any], out_dir: str | Path, *, progress: bool = True
            ) -> dict[str, Any]:
    """Fit an ETN potential from a config dict and write it to ``out_dir``.

    Config keys (YAML in ``examples/mlearn_*_etn.yaml``)::

        data:  {train: SPEC, test: SPEC (optional), valid_fraction: 0.1, seed: 0,
                valid_size: N (optional, exact count instead of the fraction),
                stratify: false (true: valid_fraction of every config_type,
                :func:`stratified_split`)}
        model: ETNConfig fields except species/reference_energies (species from the data)
        reference: "fitted" | "averaged" | {"isolated": {symbol_or_Z: eV, ...}}
        train: TrainConfig fields (weights: {energy, forces, stress, energy_per_atom}),
               plus resume: true to continue from out_dir's checkpoint
        init:  DIR of a trained ETN to start from (optional): the model section may enlarge
               d, L and the channel counts (:meth:`ETNPotential.embed`); reference energies,
               feature_scale and the standardisation of the old channels are taken from it

    ``SPEC`` is anything :func:`entangle.data.load` accepts (or a list of them). ``task``
    (``etn``) and ``config_dir`` (added by the CLI) are accepted and otherwise ignored.
    Returns the metrics dict that is also written to ``out_dir/metrics.json``
    (``valid``/``test`` error dicts, parameter count, history length, wall time); also writes
    ``parity.png`` (validation and test energies and forces) and ``learning_curve.png``.
    """
    start = time.time()
    setup = etn_setup(config, progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ETNPotential(ETNConfig(**setup.model))
    if setup.start_from is not None:  # before the batches are prepared
        model.check_embeddable(setup.start_from)
    train, valid, test, train_cfg = setup.train, setup.valid, setup.test, setup.train_config
    trainer = _train(model, train, valid, train_cfg, out_dir, setup.resume, setup.start_from)
    model.cpu()
    metrics: dict[str, Any] = {
        "n_parameters": model.n_parameters(), "n_train": len(train), "n_valid": len(valid),
        "steps": trainer.step, "best_valid_loss": trainer.best_loss,
        "history_last": trainer.history[-1] if trainer.history else None,
    }
    series = {}  # split -> kept (reference, predicted) values for the parity plot
    for name, part in (("valid", valid), ("test", test)):
        if part is not None and len(part):
            acc = ErrorAccumulator(keep_values=True)
            metrics[name] = evaluate_structures(model, part, train_cfg.weights, overall=acc)
            series[name] = acc.values()
    metrics["wall_time_s"] = time.time() - start
    io.save(model, out_dir / "model", metadata={"metrics": metrics})
    io.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    _write_figures(model, series, trainer.history, out_dir)
    return metrics


def _write_figures(model: ETNPotential, series: dict[str, dict[str, tuple]],
                   history: Sequence[dict[str, Any]], out_dir: Path) -> None:
    """``parity.png`` (energies and forces of each split in ``series``, the values of
    :meth:`ErrorAccumulator.values`) and ``learning_curve.png``."""
    from entangle.analysis.plots import plot_learning_curve, plot_parity

    title = f"ETN, {model.n_parameters()} parameters"
    if series:
        plot_parity({"energy (eV/atom)": {k: v["energy"] for k, v in series.items()},
                     "force components (eV/Å)": {k: v["forces"] for k, v in series.items()}},
                    out_dir / "parity.png", title)
    if history:
        plot_learning_curve(history, out_dir / "learning_curve.png", title=title)


def _train(model: ETNPotential, train: Sequence[Structure], valid: Sequence[Structure],
           config: TrainConfig, out_dir: Path, resume: bool,
           start_from: ETNPotential | None = None) -> Trainer:
    """Run the training stage(s) of ``config``, the first from ``start_from`` embedded
    (:meth:`ETNPotential.embed`) if given; returns the trainer of the last stage.

    With ``polish_steps`` the L-BFGS polish continues the Adam stage's step count, history and
    best validation loss, and checkpoints to ``out_dir/polish``: a resumed fit whose polish has
    begun goes straight on with the polish.
    """
    polish_dir = out_dir / "polish"
    if not (config.polish_steps and resume and (polish_dir / "checkpoint.json").exists()):
        trainer = Trainer(model, train, valid, config, out_dir, start_from)
        trainer.fit(resume=resume)
        if not config.polish_steps:
            return trainer
        first, resume = trainer, False
    polish = dataclasses.replace(
        config, optimizer="lbfgs", lr=1.0, lr_decay=1.0, dtype=None, ema_decay=None,
        clip_grad_norm=None, polish_steps=0, standardize=False, max_time_s=config.polish_time_s)
    trainer = Trainer(model, train, valid, polish, polish_dir)
    if not resume:  # start from the Adam stage's best parameters (loaded by its fit)
        trainer.step, trainer.history = first.step, first.history
        trainer.best_loss, trainer.best_state = first.best_loss, first.best_state
        trainer.config.max_steps = first.step + config.polish_steps
        trainer.save_checkpoint()  # marks the Adam stage as done
    else:
        meta = json.loads((polish_dir / "checkpoint.json").read_text())
        trainer.config.max_steps = meta["train_config"]["max_steps"]
    trainer.fit(resume=resume)
    return trainer


def evaluate_etn(model_dir: str | Path, data: Any) -> dict[str, Any]:
    """Errors of a saved ETN on ``data`` (a Dataset, list of Structures or a load spec).

    Returns energy_mae_mev_per_atom, energy_rmse_mev_per_atom, force_mae_ev_per_a,
    force_rmse_ev_per_a, stress_rmse_gpa (None where the data have no such labels),
    n_structures and, for data with several ``config_type`` labels, the same per type under
    ``by_config_type`` (:func:`evaluate_structures`).
    """
    model = io.load(model_dir)
    if not isinstance(model, ETNPotential):
        raise ConfigError(f"{model_dir} does not hold an ETN potential")
    items = _load_data(data) if not isinstance(data, (list, tuple)) or \
        (data and not isinstance(data[0], Structure)) else Dataset(data)
    metrics = evaluate_structures(model, items, LossWeights())
    metrics.pop("loss")
    metrics["n_structures"] = len(items)
    return metrics
