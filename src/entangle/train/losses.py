"""Losses and error metrics for interatomic potentials.

The loss is eq. (47) of Hodapp & Shapeev, extended by a stress term:

    L = (1/#T) Σ_structures w_s [ w_e (E - E_qm)² + w_f Σ_i |f_i - f_i^qm|² + w_σ |σ - σ_qm|² ],

with ``w_s`` the structure weight; labels missing from a structure (``*_mask`` of :class:`~entangle.data.AtomsBatch`) do not
contribute. With ``energy_per_atom`` the energy residual is divided by the number of atoms
(a common choice for datasets with cells of very different sizes; eq. 47 uses totals).
Weights are in eV⁻², (eV/Å)⁻² and (eV/Å³)⁻² respectively; the paper uses ``w_e = 1``,
``w_f = 0.01`` (eq. 50).

Optionally (not in the paper) the squares of the energy residuals and of the force components
are replaced by the Huber function ``h_δ(r) = r²`` for ``|r| <= δ`` and ``2δ|r| - δ²`` beyond:
residuals larger than ``δ`` then count linearly, as in a mean absolute error. A fit judged by
its MAE gains where the errors are heavy-tailed (few atoms of hot or defected cells with large
force errors dominate a squared loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from entangle.data.atoms import AtomsBatch
from entangle.errors import ConfigError

__all__ = ["LossWeights", "potential_loss", "ErrorAccumulator", "EV_PER_A3_TO_GPA"]

EV_PER_A3_TO_GPA = 160.21766208
"""1 eV/Å³ in GPa."""


@dataclass
class LossWeights:
    """Weights of eq. (47): energy (eV⁻²), forces ((eV/Å)⁻²), stress ((eV/Å³)⁻²).

    ``huber_energy`` (eV; eV/atom with ``energy_per_atom``) and ``huber_forces`` (eV/Å, per
    Cartesian component) switch the energy and force terms from squares to the Huber function
    with that ``δ`` (module docstring); ``None`` keeps the squares of eq. (47).
    """

    energy: float = 1.0
    forces: float = 0.01
    stress: float = 0.0
    energy_per_atom: bool = False
    huber_energy: float | None = None
    huber_forces: float | None = None

    def __post_init__(self) -> None:
        for name in ("energy", "forces", "stress"):
            value = float(getattr(self, name))
            if not value >= 0:
                raise ConfigError(f"loss weight {name} must be >= 0, got {value}")
            setattr(self, name, value)
        for name in ("huber_energy", "huber_forces"):
            value = getattr(self, name)
            if value is not None:
                if not float(value) > 0:
                    raise ConfigError(f"{name} (the Huber δ) must be > 0 or null, got {value}")
                setattr(self, name, float(value))


def _square_or_huber(r: torch.Tensor, delta: float | None) -> torch.Tensor:
    """``r²``, or the Huber function ``h_δ(r)`` (equal to ``r²`` for ``|r| <= δ``)."""
    if delta is None:
        return r**2
    a = r.abs()
    return torch.where(a <= delta, r**2, 2.0 * delta * a - delta**2)


def potential_loss(pred: dict[str, torch.Tensor], batch: AtomsBatch, weights: LossWeights
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum over the structures of ``batch`` of the eq. (47) terms (divide by ``#T`` outside).

    Parameters
    ----------
    pred : model output with ``energy (B,)`` and, when weighted, ``forces (N, 3)``,
        ``stress (B, 6)``.
    batch : the labelled batch.
    weights : LossWeights

    Returns
    -------
    (loss, parts): the summed loss (0-dim) and its energy/forces/stress parts.
    """
    n_atoms = batch.n_atoms.to(pred["energy"].dtype)  # [B]
    w = batch.weight.to(pred["energy"].dtype)  # [B]
    de = pred["energy"] - batch.energy.to(pred["energy"].dtype)  # [B]
    if weights.energy_per_atom:
        de = de / n_atoms
    zero = de.new_zeros(())
    de2 = _square_or_huber(de, weights.huber_energy)
    parts = {"energy": weights.energy * torch.where(batch.energy_mask, w * de2, zero).sum()}
    if weights.forces > 0 and "forces" in pred:
        df_vec = pred["forces"] - batch.forces.to(de.dtype)  # [N, 3]
        df = _square_or_huber(df_vec, weights.huber_forces).sum(dim=1)  # [N]
        per = de.new_zeros(de.shape[0]).index_add(0, batch.batch, df)  # [B]
        parts["forces"] = weights.forces * torch.where(batch.forces_mask, w * per, zero).sum()
    if weights.stress > 0 and "stress" in pred:
        ds = ((pred["stress"] - batch.stress.to(de.dtype)) ** 2).sum(dim=1)  # [B]
        parts["stress"] = weights.stress * torch.where(batch.stress_mask, w * ds, zero).sum()
    return sum(parts.values()), parts


class ErrorAccumulator:
    """Running MAE/RMSE of per-atom energies (meV/atom), forces (eV/Å) and stress (GPa).

    With ``keep_values`` it also keeps the reference and predicted values (:meth:`values`,
    for parity plots).
    """

    def __init__(self, keep_values: bool = False) -> None:
        self.sums = {k: 0.0 for k in ("e_abs", "e_sq", "f_abs", "f_sq", "s_sq")}
        self.counts = {"e": 0, "f": 0, "s": 0}
        self.keep_values = keep_values
        self._values: dict[str, list[np.ndarray]] = {
            k: [] for k in ("e_ref", "e_pred", "f_ref", "f_pred")}

    def add(self, pred: dict[str, torch.Tensor], batch: AtomsBatch) -> None:
        with torch.no_grad():
            n_atoms = batch.n_atoms.to(pred["energy"].dtype)
            e_ref = (batch.energy / n_atoms)[batch.energy_mask]
            e_pred = (pred["energy"] / n_atoms)[batch.energy_mask]
            de = e_pred - e_ref
            self._keep("e", e_ref, e_pred)
            self.sums["e_abs"] += float(de.abs().sum())
            self.sums["e_sq"] += float((de**2).sum())
            self.counts["e"] += int(de.numel())
            if "forces" in pred:
                atom_mask = batch.forces_mask[batch.batch]
                f_ref, f_pred = batch.forces[atom_mask], pred["forces"][atom_mask]
                df = f_pred - f_ref
                self._keep("f", f_ref.reshape(-1), f_pred.reshape(-1))
                self.sums["f_abs"] += float(df.abs().sum())
                self.sums["f_sq"] += float((df**2).sum())
                self.counts["f"] += int(df.numel())
            if "stress" in pred:
                ds = (pred["stress"] - batch.stress)[batch.stress_mask] * EV_PER_A3_TO_GPA
                self.sums["s_sq"] += float((ds**2).sum())
                self.counts["s"] += int(ds.numel())

    def _keep(self, kind: str, reference: torch.Tensor, predicted: torch.Tensor) -> None:
        if self.keep_values:
            self._values[f"{kind}_ref"].append(reference.detach().double().cpu().numpy())
            self._values[f"{kind}_pred"].append(predicted.detach().double().cpu().numpy())

    def merge(self, other: ErrorAccumulator) -> None:
        """Add the errors (and kept values) accumulated by ``other`` (another group)."""
        for key in self.sums:
            self.sums[key] += other.sums[key]
        for key in self.counts:
            self.counts[key] += other.counts[key]
        for key, parts in self._values.items():
            parts.extend(other._values[key])

    def values(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Kept ``(reference, predicted)`` arrays: ``"energy"`` per atom (eV/atom) and
        ``"forces"`` components (eV/Å); needs ``keep_values``."""
        if not self.keep_values:
            raise ValueError("this ErrorAccumulator was made without keep_values")

        def join(key: str) -> np.ndarray:
            parts = self._values[key]
            return np.concatenate(parts) if parts else np.zeros(0)

        return {"energy": (join("e_ref"), join("e_pred")),
                "forces": (join("f_ref"), join("f_pred"))}

    def result(self) -> dict[str, float | None]:
        def ratio(key: str, count: str, scale: float = 1.0, root: bool = False) -> float | None:
            n = self.counts[count]
            if n == 0:
                return None
            value = self.sums[key] / n
            return scale * (value ** 0.5 if root else value)

        return {
            "energy_mae_mev_per_atom": ratio("e_abs", "e", 1000.0),
            "energy_rmse_mev_per_atom": ratio("e_sq", "e", 1000.0, root=True),
            "force_mae_ev_per_a": ratio("f_abs", "f"),
            "force_rmse_ev_per_a": ratio("f_sq", "f", root=True),
            "stress_rmse_gpa": ratio("s_sq", "s", root=True),
        }
