"""Fit descriptor models (tensor networks and baselines) on structure-averaged SOAP tensors.

The pipeline of Sommer & Dunham, Sec. IV A, driven by one config (a dict read from YAML):

1. structures from :func:`entangle.data.load` (short names such as ``"nomad2018:train"``,
   resolved under ``$ENTANGLE_DATA``), the geometries as given in the files;
2. a scalar target per structure (:data:`TARGETS`), e.g. the NOMAD 2018 mixing energy per
   cation (eq. 21): the CSV's ``formation_energy_ev_natom`` is per atom, and every
   (Al,Ga,In)2O3 structure has 2 cations in 5 atoms, so
   ``ΔH_mix [meV/cation] = 1000 * formation_energy_ev_natom * n_atoms / n_cations``;
3. the SOAP power spectrum ``B2`` (eq. 14) of every atom, averaged per structure (eq. 22),
   ``(n_structures, S, S, n_max, n_max, l_max + 1)``, cached on disk under ``cache_dir``
   (keyed by the SOAP settings and the exact geometries, so a stale cache is never read),
   then standardised entry by entry with the training-split statistics (:class:`Standardization`;
   off for the SOAP-kernel GPR, whose kernel compares raw spectra);
4. a model from :mod:`entangle.models.descriptor_tn` or :mod:`entangle.models.baselines`,
   trained on the training split with early stopping on a validation split carved from it
   (Adam or L-BFGS, :func:`~entangle.models.descriptor_tn.fit_model`, optionally from the convex
   linear fit; optionally two-site ALS sweeps for an MPS; marginal-likelihood fit for the GPR
   baselines);
5. ``DIR/model.safetensors`` + ``DIR/model.json`` (:func:`entangle.io.save`; the SOAP settings,
   the standardisation and the target definition live in the model's ``metadata``),
   ``DIR/metrics.json`` and ``DIR/parity.png`` (validation and test predictions).

The target scaling (``target_shift``, ``target_scale``) is part of the model's buffers: a
loaded model predicts in target units directly. It is also copied to the metadata so that a
reader of ``model.json`` sees the units and scale without loading the weights.

Config keys (with their defaults)::

    seed: 0
    data:
      train: nomad2018:train          # dataset name or path
      test: nomad2018:test            # optional
      target: mixing_energy_mev_per_cation
      validation_fraction: 0.2        # random, by ``seed``
      max_train: null                 # optional: first N structures only (smoke runs)
      max_test: null
    descriptor:
      species: [O, Al, Ga, In]        # symbols or atomic numbers, order of the species axes
      r_cut: 6.0                      # Å
      n_max: 4
      l_max: 3
      sigma: 1.0                      # Å, DScribe's default Gaussian width
      cache_dir: runs/cache           # null: no cache
      batch_size: 32                  # structures per SOAP evaluation
      standardize: null               # per entry 1 + (x - mean) / std, training-split statistics;
                                      # null: on for every model but gpr_soap
      ...                             # any other SOAPConfig field (rbf, cutoff, normalisation, ...)
    model:
      kind: mpo                       # mps | mpo | ttn | mera | dense | gpr_rbf | gpr_soap | dnn
      ...                             # the fields of the model's config dataclass except dims
    train:                            # ignored by the GPR models
      epochs: 2000
      lr: 0.01
      batch_size: null                # structures per Adam step (null: full batch)
      patience: 200
      weight_decay: 0.0
      als_sweeps: 0                   # MPS only: two-site ALS sweeps after Adam
      ridge: 1.0e-6                   # ALS ridge (normalised units)
      optimizer: adam                 # adam | lbfgs (full batch; an "epoch" = lbfgs_iterations steps)
      loss: mse                       # mse | huber (threshold huber_delta, in target stds)
      huber_delta: 0.1
      lbfgs_iterations: 10
      warm_start: null                # null | linear: start from the convex linear fit
                                      # (entangle.models.descriptor_tn.linear_warm_start; mps, dense,
                                      # and mpo with linear_chi > 0), same loss, ridge below
      warm_start_ridge: 1.0e-5        # ridge of that fit (standardised-feature units)

Metrics (``metrics.json``): ``{split}_mae_{units}``, ``{split}_rmse_{units}``,
``{split}_max_abs_error_{units}``, ``{split}_n_structures`` for train, validation and test. For the
NOMAD 2018 target ``mixing_energy_mev_per_cation`` also, per split, on the scale of the CSV column
``formation_energy_ev_natom`` that Sutton et al. (2019, Table 1) and the Kaggle score use:
``{split}_mae_mev_csv_scale`` and ``{split}_rmse_mev_csv_scale`` (meV, = the per-cation errors x
n_cations / n_atoms = x 2/5) and ``{split}_rmsle`` (Kaggle's RMSLE of the CSV column in eV,
negative predictions clipped to 0). Sutton's "meV/cation" MAEs (13–15 for the top three) are on
this CSV scale: their RMSLE (0.020–0.022) is only compatible with it (see BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import hashlib
import io as _io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from entangle import io
from entangle.analysis.plots import plot_parity
from entangle.data import Dataset, Structure, load
from entangle.descriptors import SOAP, SOAPConfig, structure_average
from entangle.errors import ConfigError, DataError, ModelFileError
from entangle.models.baselines import DenseNNConfig, DenseNNRegressor, GPRConfig, RBFGPRegressor, SOAPGPRegressor
from entangle.models.descriptor_tn import (
    DenseTensorConfig, DenseTensorRegressor, DescriptorModel, MERARegressor, MPOConfig, MPORegressor, MPSConfig,
    MPSRegressor, TreeConfig, TTNRegressor, fit_model, linear_warm_start,
)

__all__ = ["TARGETS", "MODEL_KINDS", "DEFAULT_CONFIG", "target_values", "soap_config", "descriptor_dims",
           "compute_descriptors", "Standardization", "build_model", "train_model", "n_parameters",
           "regression_metrics", "csv_scale_metrics", "fit_descriptor_model", "evaluate_descriptor_model",
           "predict_descriptor_model"]

#: Cation species of the (Al_x Ga_y In_z)2O3 alloys.
_CATIONS = (13, 31, 49)
_OXYGEN = 8


def _mixing_energy_per_cation(structure: Structure) -> float:
    """ΔH_mix in meV/cation (eq. 21) from the per-atom formation energy of the NOMAD CSV."""
    numbers = structure.numbers
    foreign = sorted(set(int(z) for z in numbers) - {_OXYGEN, *_CATIONS})
    if foreign:
        raise DataError(f"atomic numbers {foreign} are neither O nor a cation (Al, Ga, In)",
                        source=structure.source, index=structure.index, field="numbers")
    n_cations = int(np.isin(numbers, _CATIONS).sum())
    if n_cations == 0:
        raise DataError("no cation (Al, Ga, In): the energy per cation is undefined",
                        source=structure.source, index=structure.index, field="numbers")
    value = _property(structure, "formation_energy_ev_natom")
    return 1000.0 * value * structure.n_atoms / n_cations


def _property(structure: Structure, name: str) -> float:
    if name not in structure.properties:
        raise DataError(f"no property {name!r}", source=structure.source, index=structure.index,
                        field="properties")
    value = float(structure.properties[name])
    if not math.isfinite(value):
        raise DataError(f"{name} is not finite ({value})", source=structure.source,
                        index=structure.index, field="properties")
    return value


def _energy_per_atom(structure: Structure) -> float:
    if structure.energy is None:
        raise DataError("structure has no energy", source=structure.source, index=structure.index,
                        field="energy")
    return 1000.0 * structure.energy / structure.n_atoms


#: name -> (function of a Structure, units). Every target is intensive, matching the
#: structure-averaged descriptor (eq. 22).
TARGETS: dict[str, tuple[Callable[[Structure], float], str]] = {
    "mixing_energy_mev_per_cation": (_mixing_energy_per_cation, "meV/cation"),
    "formation_energy_mev_per_atom": (lambda s: 1000.0 * _property(s, "formation_energy_ev_natom"), "meV/atom"),
    "bandgap_ev": (lambda s: _property(s, "bandgap_energy_ev"), "eV"),
    "energy_mev_per_atom": (_energy_per_atom, "meV/atom"),
}

#: model kind -> (model class, config dataclass).
MODEL_KINDS: dict[str, tuple[type[DescriptorModel], type]] = {
    "mps": (MPSRegressor, MPSConfig),
    "mpo": (MPORegressor, MPOConfig),
    "ttn": (TTNRegressor, TreeConfig),
    "mera": (MERARegressor, TreeConfig),
    "dense": (DenseTensorRegressor, DenseTensorConfig),
    "gpr_rbf": (RBFGPRegressor, GPRConfig),
    "gpr_soap": (SOAPGPRegressor, GPRConfig),
    "dnn": (DenseNNRegressor, DenseNNConfig),
}
_GPR_KINDS = ("gpr_rbf", "gpr_soap")

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "data": {"train": "nomad2018:train", "test": None, "target": "mixing_energy_mev_per_cation",
             "validation_fraction": 0.2, "max_train": None, "max_test": None},
    "descriptor": {"species": ["O", "Al", "Ga", "In"], "r_cut": 6.0, "n_max": 4, "l_max": 3, "sigma": 1.0,
                   "cache_dir": "runs/cache", "batch_size": 32, "standardize": None},
    "model": {"kind": "mpo"},
    "train": {"epochs": 2000, "lr": 1e-2, "batch_size": None, "patience": 200, "weight_decay": 0.0,
              "als_sweeps": 0, "ridge": 1e-6, "optimizer": "adam", "loss": "mse", "huber_delta": 0.1,
              "lbfgs_iterations": 10, "warm_start": None, "warm_start_ridge": 1e-5},
}
_SECTIONS = ("seed", "data", "descriptor", "model", "train")
_PIPELINE_KEYS = ("cache_dir", "batch_size", "standardize")  # descriptor keys that are not SOAP settings


# ------------------------------------------------------------------------------------------ config
def _merged_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``config``; unknown sections or keys raise :class:`ConfigError`."""
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    config = {k: v for k, v in config.items() if k not in ("task", "config_dir")}  # added by the CLI
    unknown = sorted(set(config) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; expected {list(_SECTIONS)}")
    out = copy.deepcopy(DEFAULT_CONFIG)
    for section, value in config.items():
        if section == "seed":
            out["seed"] = value
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {type(value).__name__}")
        if section not in ("model", "descriptor"):  # those two are checked against their dataclasses
            bad = sorted(set(value) - set(DEFAULT_CONFIG[section]))
            if bad:
                raise ConfigError(f"unknown key(s) {bad} in config section {section!r}; "
                                  f"expected {sorted(DEFAULT_CONFIG[section])}")
        out[section].update(copy.deepcopy(value))
    _check_config(out)
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_config(config: dict[str, Any]) -> None:
    if not _is_int(config["seed"]) or config["seed"] < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {config['seed']!r}")
    data = config["data"]
    if not data.get("train"):
        raise ConfigError("data.train must name a dataset")
    if data["target"] not in TARGETS:
        raise ConfigError(f"data.target must be one of {sorted(TARGETS)}, got {data['target']!r}")
    fraction = data["validation_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"data.validation_fraction must be a number in (0, 1), got {fraction!r}")
    for key in ("max_train", "max_test"):
        if data[key] is not None and (not _is_int(data[key]) or data[key] < 1):
            raise ConfigError(f"data.{key} must be null or an integer >= 1, got {data[key]!r}")
    desc = config["descriptor"]
    if not _is_int(desc["batch_size"]) or desc["batch_size"] < 1:
        raise ConfigError(f"descriptor.batch_size must be an integer >= 1, got {desc['batch_size']!r}")
    soap_config(desc)  # validates the SOAP settings
    if desc["standardize"] not in (None, True, False):
        raise ConfigError(f"descriptor.standardize must be true, false or null, got {desc['standardize']!r}")
    kind = config["model"].get("kind")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
    train = config["train"]
    for key, low in (("epochs", 1), ("patience", 1), ("als_sweeps", 0)):
        if not _is_int(train[key]) or train[key] < low:
            raise ConfigError(f"train.{key} must be an integer >= {low}, got {train[key]!r}")
    if train["batch_size"] is not None and (not _is_int(train["batch_size"]) or train["batch_size"] < 1):
        raise ConfigError(f"train.batch_size must be null or an integer >= 1, got {train['batch_size']!r}")
    for key, positive in (("lr", True), ("weight_decay", False), ("ridge", False)):
        value = train[key]
        ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
              and (value > 0 if positive else value >= 0))
        if not ok:
            raise ConfigError(f"train.{key} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    if train["als_sweeps"] and kind != "mps":
        raise ConfigError(f"train.als_sweeps is only available for model.kind 'mps', not {kind!r}")
    if train["optimizer"] not in ("adam", "lbfgs"):
        raise ConfigError(f"train.optimizer must be 'adam' or 'lbfgs', got {train['optimizer']!r}")
    if train["loss"] not in ("mse", "huber"):
        raise ConfigError(f"train.loss must be 'mse' or 'huber', got {train['loss']!r}")
    if not _is_int(train["lbfgs_iterations"]) or train["lbfgs_iterations"] < 1:
        raise ConfigError(f"train.lbfgs_iterations must be an integer >= 1, got {train['lbfgs_iterations']!r}")
    for key in ("huber_delta", "warm_start_ridge"):
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                or (key == "huber_delta" and value == 0):
            raise ConfigError(f"train.{key} must be a finite number {'> 0' if key == 'huber_delta' else '>= 0'}, "
                              f"got {value!r}")
    if train["warm_start"] not in (None, "linear"):
        raise ConfigError(f"train.warm_start must be null or 'linear', got {train['warm_start']!r}")
    if train["warm_start"] == "linear":
        linear_ok = kind in ("mps", "dense") or (kind == "mpo" and config["model"].get("linear_chi", 0))
        if not linear_ok:
            raise ConfigError("train.warm_start 'linear' needs model.kind mps or dense, or mpo with linear_chi > 0")


def soap_config(descriptor: dict[str, Any]) -> SOAPConfig:
    """The :class:`~entangle.descriptors.SOAPConfig` of a ``descriptor`` config section.

    Keys other than ``cache_dir``, ``batch_size`` and ``standardize`` are SOAPConfig fields (``species``,
    ``r_cut``, ``n_max``, ``l_max``, ``sigma``, ...); bad values raise :class:`ConfigError`.
    """
    names = {f.name for f in fields(SOAPConfig)}
    settings = {k: v for k, v in descriptor.items() if k not in _PIPELINE_KEYS}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ConfigError(f"unknown descriptor setting(s) {unknown}; expected {sorted(names)}")
    if isinstance(settings.get("species"), list):
        settings["species"] = tuple(settings["species"])
    try:
        return SOAPConfig(**settings)
    except TypeError as error:
        raise ConfigError(f"descriptor: {error}") from None


def descriptor_dims(config: SOAPConfig) -> list[int]:
    """Shape of one structure's power spectrum: ``[S, S, n_max, n_max, l_max + 1]`` (``[S, n_max,
    n_max, l_max + 1]`` without crossover)."""
    s, n, l = len(config.species), config.n_max, config.l_max + 1
    return [s, s, n, n, l] if config.crossover else [s, n, n, l]


# ----------------------------------------------------------------------------------------- targets
def target_values(structures: Sequence[Structure], target: str) -> np.ndarray:
    """Target of every structure, ``(n_structures,)`` float64, in the units of ``TARGETS[target]``."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; one of {sorted(TARGETS)}")
    function = TARGETS[target][0]
    return np.array([function(s) for s in structures], dtype=np.float64)


# ------------------------------------------------------------------------------------- descriptors
def _cache_key(structures: Sequence[Structure], config: SOAPConfig) -> str:
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(b"structure-averaged power spectrum, float64")
    for s in structures:
        for array in (s.numbers.astype(np.int64), s.positions.astype(np.float64), np.asarray(s.cell, np.float64),
                      np.asarray(s.pbc, bool)):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def compute_descriptors(structures: Sequence[Structure], config: SOAPConfig, *,
                        cache_dir: str | PathLike | None = None, batch_size: int = 32,
                        progress: bool = False) -> torch.Tensor:
    """Structure-averaged SOAP power spectra (eqs. 14, 22).

    Parameters
    ----------
    structures : the structures (every element must be among ``config.species``).
    config : SOAP settings.
    cache_dir : directory of the on-disk cache (None: no cache). The file name is the SHA-256 of
        the settings and of every structure's numbers, positions, cell and pbc.
    batch_size : structures per SOAP evaluation.
    progress : tqdm progress bar.

    Returns
    -------
    (n_structures, S, S, n_max, n_max, l_max + 1) float64 tensor.
    """
    structures = list(structures)
    if not structures:
        raise DataError("no structures to describe")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"soap_b2_mean_{_cache_key(structures, config)[:24]}.npy"
        if path.is_file():
            cached = np.load(path, allow_pickle=False)
            if cached.shape[0] == len(structures):
                return torch.from_numpy(cached)
    soap = SOAP(config)
    blocks = []
    with tqdm(total=len(structures), unit="structure", desc="SOAP", disable=not progress) as bar:
        for start in range(0, len(structures), batch_size):
            chunk = structures[start:start + batch_size]
            with torch.no_grad():
                out = soap(chunk)
            blocks.append(structure_average(out.power_spectrum, out.structure_index, len(chunk)))  # [b, S, S, n, n, L]
            bar.update(len(chunk))
    result = torch.cat(blocks)  # [n_structures, S, S, n, n, L]
    if path is not None:
        buffer = _io.BytesIO()
        np.save(buffer, result.numpy(), allow_pickle=False)
        io.atomic_write_bytes(path, buffer.getvalue())
    return result


class Standardization:
    """Per-entry standardisation ``1 + (x - mean) / scale`` of descriptor tensors.

    The entries of the averaged power spectrum span several orders of magnitude (on NOMAD 2018
    the per-entry standard deviations range from 1e-3 to 5e2), which leaves first-order
    optimisers with a badly conditioned problem; Sommer & Dunham likewise feed "the
    vectorization and standardization of the input descriptor" to their feature-map model
    (Sec. III A). The unit offset gives every entry mean 1 on the training split instead of 0:
    models that centre their inputs (MPS, TTN, MERA, dense, DNN) and the translation-invariant
    RBF kernel do not see it, while the quadratic MPO model ``<x|T|x>`` keeps its linear term
    ``2 <1|T|δ>`` (with centred inputs it would be purely quadratic).
    ``mean``, ``scale``: (*dims); entries with zero spread keep scale 1.
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        if mean.shape != scale.shape:
            raise ConfigError(f"standardisation mean {tuple(mean.shape)} and scale {tuple(scale.shape)} differ")
        self.mean, self.scale = mean.to(torch.float64), scale.to(torch.float64)

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardization:
        """Statistics of training descriptors ``x: (n, *dims)``."""
        std = x.std(0, unbiased=False)
        floor = 1e-12 * float(std.max()) if std.numel() else 0.0
        return cls(x.mean(0), torch.where(std > floor, std, torch.ones_like(std)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ModelFileError(f"descriptors of shape {tuple(x.shape[1:])} do not match the stored "
                                 f"standardisation {tuple(self.mean.shape)}")
        return 1.0 + (x - self.mean) / self.scale  # [n, *dims]

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.mean.shape), "mean": self.mean.reshape(-1).tolist(),
                "scale": self.scale.reshape(-1).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardization:
        shape = tuple(int(d) for d in data["shape"])
        mean = torch.tensor(data["mean"], dtype=torch.float64)
        scale = torch.tensor(data["scale"], dtype=torch.float64)
        if mean.numel() != math.prod(shape) or scale.numel() != mean.numel() or not bool((scale > 0).all()):
            raise ModelFileError("stored standardisation is malformed (sizes or non-positive scales)")
        return cls(mean.reshape(shape), scale.reshape(shape))


def _structures(data: str | PathLike | Sequence[Structure], limit: int | None = None) -> list[Structure]:
    if isinstance(data, (str, PathLike)):
        loaded = load(data)
        if not isinstance(loaded, Dataset):
            raise DataError(f"{data!s} holds no atomic structures (got {type(loaded).__name__})")
        data = loaded
    structures = list(data)
    for k, s in enumerate(structures):
        if not isinstance(s, Structure):
            raise DataError(f"expected a Structure, got {type(s).__name__}", index=k)
    return structures if limit is None else structures[:limit]


# ------------------------------------------------------------------------------------------ models
def build_model(model_section: dict[str, Any], dims: Sequence[int], seed: int) -> DescriptorModel:
    """A fresh model of ``model_section['kind']`` for descriptors of shape ``dims``.

    The other keys of ``model_section`` are fields of the model's config dataclass (``chi``,
    ``site_order``, ``hidden``, ...); ``dims`` comes from the descriptor and ``seed`` from the
    config unless the section sets its own.
    """
    section = dict(model_section)
    kind = section.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
    cls, config_cls = MODEL_KINDS[kind]
    allowed = {f.name for f in fields(config_cls)} - {"dims"}
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"unknown model setting(s) {unknown} for kind {kind!r}; expected {sorted(allowed)}")
    section.setdefault("seed", seed)
    try:
        config = config_cls(dims=[int(d) for d in dims], **section)
    except TypeError as error:
        raise ConfigError(f"model: {error}") from None
    return cls(config)


def train_model(model: DescriptorModel, kind: str, train_section: dict[str, Any], x_train: torch.Tensor,
                y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, seed: int) -> dict[str, Any]:
    """Train ``model`` on the training split, selecting on the validation split.

    GPR models maximise the marginal likelihood on the training split (the validation split is
    not used). Gradient models optionally start from the convex linear fit
    (``warm_start: linear``, :func:`~entangle.models.descriptor_tn.linear_warm_start`), then run
    :func:`fit_model` (Adam or full-batch L-BFGS, MSE or Huber loss, early stopping, best
    validation weights restored; after a warm start the start itself competes as epoch -1); an
    MPS then runs ``als_sweeps`` two-site ALS sweeps, kept only when they lower the validation MSE.

    Returns
    -------
    dict with ``epochs``, ``best_epoch``, ``stopped_early`` (gradient models), ``als_sweeps_kept``.
    """
    if kind in _GPR_KINDS:
        model.fit(x_train, y_train)
        return {}
    train_section = dict(DEFAULT_CONFIG["train"], **train_section)
    loss, delta = train_section["loss"], float(train_section["huber_delta"])
    info: dict[str, Any] = {}
    if train_section["warm_start"] == "linear":
        start = linear_warm_start(model, x_train, y_train, ridge=float(train_section["warm_start_ridge"]),
                                  loss=loss, huber_delta=delta)
        info["warm_start_discarded"] = start["discarded"]
    history = fit_model(model, x_train, y_train, validation=(x_val, y_val), epochs=train_section["epochs"],
                        lr=float(train_section["lr"]), batch_size=train_section["batch_size"],
                        patience=train_section["patience"], weight_decay=float(train_section["weight_decay"]),
                        seed=seed, normalize=train_section["warm_start"] is None,
                        optimizer=train_section["optimizer"], loss=loss, huber_delta=delta,
                        lbfgs_iterations=train_section["lbfgs_iterations"])
    info.update({"epochs": len(history.train_loss), "best_epoch": history.best_epoch,
                 "stopped_early": history.stopped_early})
    kept = 0
    if train_section["als_sweeps"]:
        best = _mse(model, x_val, y_val)
        for _ in range(train_section["als_sweeps"]):
            state = copy.deepcopy(model.state_dict())
            model.als_sweep(x_train, y_train, ridge=float(train_section["ridge"]), max_bond=model.config.chi)
            score = _mse(model, x_val, y_val)
            if score < best:
                best, kept = score, kept + 1
            else:
                _resize_and_load(model, state)
                break
    info["als_sweeps_kept"] = kept
    return info


def _resize_and_load(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore a state dict whose shapes may differ from the current ones (ALS can resize bonds)."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            own[name].data = torch.empty_like(tensor)
    model.load_state_dict(state)


def n_parameters(model: DescriptorModel) -> int:
    """Trained weights of a model: its parameters, or for a GPR its dual weights (one per training
    structure; the 2–3 kernel hyperparameters are not counted)."""
    if isinstance(model, (RBFGPRegressor, SOAPGPRegressor)):
        return int(model.alpha.numel())
    return int(model.num_parameters())


@torch.no_grad()
def _predict(model: DescriptorModel, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model(x).detach().cpu().numpy().astype(np.float64)


def _mse(model: DescriptorModel, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(np.mean((_predict(model, x) - y.numpy()) ** 2))


def regression_metrics(prediction: np.ndarray, reference: np.ndarray, prefix: str, unit_suffix: str
                       ) -> dict[str, float]:
    """``{prefix}_mae_{unit}``, ``_rmse_``, ``_max_abs_error_`` and ``{prefix}_n_structures``."""
    error = np.asarray(prediction, np.float64) - np.asarray(reference, np.float64)
    return {f"{prefix}_mae_{unit_suffix}": float(np.mean(np.abs(error))),
            f"{prefix}_rmse_{unit_suffix}": float(np.sqrt(np.mean(error**2))),
            f"{prefix}_max_abs_error_{unit_suffix}": float(np.max(np.abs(error))),
            f"{prefix}_n_structures": int(error.shape[0])}


def csv_scale_metrics(prediction: np.ndarray, structures: Sequence[Structure], prefix: str) -> dict[str, float]:
    """Errors of mixing-energy predictions (meV/cation) on the scale of the NOMAD CSV column
    ``formation_energy_ev_natom``: ``{prefix}_mae_mev_csv_scale``, ``{prefix}_rmse_mev_csv_scale``
    (meV) and ``{prefix}_rmsle`` (Kaggle: RMSLE of the column in eV, negative predictions clipped)."""
    ratio = np.array([np.isin(s.numbers, _CATIONS).sum() / s.n_atoms for s in structures])  # cations per atom
    predicted_ev = np.asarray(prediction, np.float64) * ratio / 1000.0
    reference_ev = np.array([_property(s, "formation_energy_ev_natom") for s in structures])
    error = (predicted_ev - reference_ev) * 1000.0
    log_error = np.log1p(np.clip(predicted_ev, 0.0, None)) - np.log1p(reference_ev)
    return {f"{prefix}_mae_mev_csv_scale": float(np.mean(np.abs(error))),
            f"{prefix}_rmse_mev_csv_scale": float(np.sqrt(np.mean(error**2))),
            f"{prefix}_rmsle": float(np.sqrt(np.mean(log_error**2)))}


def _unit_suffix(target: str) -> str:
    units = TARGETS[target][1]
    return units.replace("/", "_per_").replace(" ", "_").lower()


# ------------------------------------------------------------------------------------------ fit
def fit_descriptor_model(config: dict[str, Any], out_dir: str | PathLike, *, progress: bool = False
                         ) -> dict[str, Any]:
    """Train a descriptor model from a config and write its files (module docstring).

    Parameters
    ----------
    config : the config mapping (see the module docstring; missing keys take defaults).
    out_dir : output directory; receives ``model.safetensors``, ``model.json``, ``metrics.json``
        and ``parity.png``.
    progress : show progress bars.

    Returns
    -------
    The metrics written to ``metrics.json``: ``{split}_mae_{units}``, ``{split}_rmse_{units}``,
    ``{split}_max_abs_error_{units}`` for the train, validation and (if configured) test
    splits, ``n_parameters``, wall times in seconds and the training details.

    Raises
    ------
    ConfigError for bad config values (before any data is read), DataError for bad data.
    """
    start = time.perf_counter()
    cfg = _merged_config(config)
    seed, data, desc, train_section = cfg["seed"], cfg["data"], cfg["descriptor"], cfg["train"]
    kind = cfg["model"]["kind"]
    soap = soap_config(desc)
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg["model"], descriptor_dims(soap), seed)  # bad model settings fail before any work
    pool = _structures(data["train"], data["max_train"])
    test = _structures(data["test"], data["max_test"]) if data.get("test") else []
    y_pool = torch.from_numpy(target_values(pool, data["target"]))
    y_test = torch.from_numpy(target_values(test, data["target"])) if test else None
    t0 = time.perf_counter()
    cache = desc["cache_dir"]
    x_pool = compute_descriptors(pool, soap, cache_dir=cache, batch_size=desc["batch_size"], progress=progress)
    x_test = (compute_descriptors(test, soap, cache_dir=cache, batch_size=desc["batch_size"], progress=progress)
              if test else None)
    descriptor_s = time.perf_counter() - t0

    n_val = max(1, round(data["validation_fraction"] * len(pool)))
    if len(pool) - n_val < 2:
        raise DataError(f"{len(pool)} training structures leave fewer than 2 after the validation split")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(pool)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    standardize = desc["standardize"] if desc["standardize"] is not None else kind != "gpr_soap"
    scaler = Standardization.fit(x_pool[train_idx]) if standardize else None
    if scaler is not None:
        x_pool = scaler(x_pool)
        x_test = scaler(x_test) if test else None
    x_train, y_train, x_val, y_val = x_pool[train_idx], y_pool[train_idx], x_pool[val_idx], y_pool[val_idx]

    t0 = time.perf_counter()
    info = train_model(model, kind, train_section, x_train, y_train, x_val, y_val, seed)
    train_s = time.perf_counter() - t0

    target, units = data["target"], TARGETS[data["target"]][1]
    suffix = _unit_suffix(target)
    predictions = {"train": (y_train.numpy(), _predict(model, x_train)),
                   "validation": (y_val.numpy(), _predict(model, x_val))}
    if test:
        predictions["test"] = (y_test.numpy(), _predict(model, x_test))
    metrics: dict[str, Any] = {"model_kind": kind, "target": target, "target_units": units,
                               "n_parameters": n_parameters(model)}
    for split, (reference, prediction) in predictions.items():
        metrics.update(regression_metrics(prediction, reference, split, suffix))
    if target == "mixing_energy_mev_per_cation":
        members = {"train": [pool[int(i)] for i in train_idx], "validation": [pool[int(i)] for i in val_idx],
                   "test": test}
        for split, (_, prediction) in predictions.items():
            metrics.update(csv_scale_metrics(prediction, members[split], split))
    metrics.update({f"train_{k}" if not k.startswith("als") else k: v for k, v in info.items()})
    metrics.update({"descriptor_wall_s": descriptor_s, "train_wall_s": train_s,
                    "total_wall_s": time.perf_counter() - start, "seed": seed})

    metadata = {"task": "descriptor_regression",
                "descriptor": {"kind": "soap_power_spectrum_structure_mean", "soap": soap.to_dict(),
                               "standardization": None if scaler is None else scaler.to_dict()},
                "target": {"name": target, "units": units, "shift": float(model.target_shift),
                           "scale": float(model.target_scale)},
                "model_kind": kind, "config": cfg, "metrics": metrics}
    io.save(model, out / "model", metadata=metadata)
    io.atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    shown = {k: v for k, v in predictions.items() if k != "train"} or predictions
    key = "test" if test else "validation"
    title = (f"{kind}, {metrics['n_parameters']} weights: {key} MAE "
             f"{metrics[f'{key}_mae_{suffix}']:.1f}, RMSE {metrics[f'{key}_rmse_{suffix}']:.1f} {units}")
    plot_parity({f"({units})": shown}, out / "parity.png", title)
    return metrics


# ------------------------------------------------------------------------------- evaluate / predict
def _load_model(model_dir: str | PathLike) -> tuple[DescriptorModel, dict[str, Any]]:
    model = io.load(model_dir)
    metadata = getattr(model, "metadata", {}) or {}
    descriptor = metadata.get("descriptor", {})
    if metadata.get("task") != "descriptor_regression" or "soap" not in descriptor or "target" not in metadata:
        raise ModelFileError(f"{model_dir}: not a descriptor-regression model (no SOAP settings or target "
                             "in its metadata)")
    return model, metadata


def _descriptors_for(metadata: dict[str, Any], structures: Sequence[Structure], cache_dir, batch_size: int
                     ) -> torch.Tensor:
    """Model inputs of ``structures``: SOAP with the stored settings, then the stored standardisation."""
    settings = dict(metadata["descriptor"]["soap"])
    settings["species"] = tuple(settings["species"])
    x = compute_descriptors(structures, SOAPConfig(**settings), cache_dir=cache_dir, batch_size=batch_size)
    stored = metadata["descriptor"].get("standardization")
    return x if stored is None else Standardization.from_dict(stored)(x)


def predict_descriptor_model(model_dir: str | PathLike, data: str | PathLike | Sequence[Structure], *,
                             cache_dir: str | PathLike | None = None, batch_size: int = 32) -> np.ndarray:
    """Predictions ``(n_structures,)`` in the model's target units (``model.json`` metadata).

    ``data`` is a dataset name or path (:func:`entangle.data.load`) or a sequence of structures;
    the descriptors are computed with the SOAP settings stored in the model.
    """
    model, metadata = _load_model(model_dir)
    structures = _structures(data)
    return _predict(model, _descriptors_for(metadata, structures, cache_dir, batch_size))


def evaluate_descriptor_model(model_dir: str | PathLike, data: str | PathLike | Sequence[Structure], *,
                              cache_dir: str | PathLike | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Errors of a saved model on labelled ``data``: ``mae_{units}``, ``rmse_{units}``,
    ``max_abs_error_{units}``, ``n_structures``, plus ``target`` and ``target_units`` (and, for the
    NOMAD mixing energy, ``mae_mev_csv_scale``, ``rmse_mev_csv_scale``, ``rmsle``: :func:`csv_scale_metrics`)."""
    model, metadata = _load_model(model_dir)
    target = metadata["target"]["name"]
    structures = _structures(data)
    reference = target_values(structures, target)
    prediction = _predict(model, _descriptors_for(metadata, structures, cache_dir, batch_size))
    metrics = regression_metrics(prediction, reference, "data", _unit_suffix(target))
    if target == "mixing_energy_mev_per_cation":
        metrics.update(csv_scale_metrics(prediction, structures, "data"))
    out: dict[str, Any] = {k.removeprefix("data_"): v for k, v in metrics.items()}
    out.update({"target": target, "target_units": metadata["target"]["units"]})
    return out
