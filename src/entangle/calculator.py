"""ASE calculator for entangle potentials (ETN).

:class:`ETNCalculator` follows the ASE calculator protocol: ``implemented_properties``
(energy, free_energy, forces, stress), a results cache that is reused until the atoms change
(``check_state``), and ``get_potential_energy`` / ``get_forces`` / ``get_stress`` through the
base class. The model is a conservative potential, so the forces are ``-∂E/∂x`` and the stress
is ``(1/V) ∂E/∂ε`` (ASE sign convention: a compressed cell has negative stress), both by
automatic differentiation; ``free_energy`` equals ``energy`` (no electronic entropy).

>>> from ase.build import bulk                                  # doctest: +SKIP
>>> atoms = bulk("Mo", "bcc", a=3.16, cubic=True)              # doctest: +SKIP
>>> atoms.calc = ETNCalculator("runs/mo")                      # doctest: +SKIP
>>> atoms.get_potential_energy()                               # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from entangle import io
from entangle.data.atoms import AtomsBatch, Structure
from entangle.data.neighbours import neighbour_list
from entangle.errors import DataError, ModelFileError

__all__ = ["ETNCalculator"]


class ETNCalculator(Calculator):
    """ASE calculator backed by a saved :class:`~entangle.models.etn.ETNPotential`.

    Parameters
    ----------
    model : path of a model saved with :func:`entangle.io.save` (a directory holding
        ``model.*`` or the file stem), or an ``ETNPotential`` instance.
    dtype : "float64" (default) or "float32" for the evaluation.
    num_threads : torch intra-op threads to use while computing (None: leave as is).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: str | os.PathLike | torch.nn.Module, *, dtype: str = "float64",
                 num_threads: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            loaded = io.load(Path(model))
        else:
            loaded = model
        if not hasattr(loaded, "species_index") or not hasattr(loaded, "config"):
            raise ModelFileError(f"{model!r} is not an entangle interatomic potential")
        self.model = loaded.to({"float64": torch.float64, "float32": torch.float32}[dtype])
        self.model.eval()
        self.num_threads = num_threads
        self.species = set(int(z) for z in self.model.config.species)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        unknown = sorted(set(int(z) for z in atoms.numbers) - self.species)
        if unknown:
            from ase.data import chemical_symbols
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in sorted(self.species))
            raise DataError(f"species {names} not supported by this potential (trained on "
                            f"{known})", field="numbers")
        periodic = bool(np.all(atoms.pbc))
        want_stress = periodic  # computed alongside forces (cheap), so the cache serves both
        if "stress" in properties and not periodic:
            from ase.calculators.calculator import PropertyNotImplementedError
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
        structure = Structure(positions=atoms.positions, numbers=atoms.numbers,
                              cell=np.array(atoms.cell), pbc=atoms.pbc)
        old_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            batch = AtomsBatch.from_structures([structure], dtype=self.model.dtype)
            nbrs = neighbour_list(batch, self.model.config.r_cut)
            with torch.no_grad():
                out = self.model(batch, nbrs, forces=True, stress=want_stress)
        finally:
            torch.set_num_threads(old_threads)
        energy = float(out["energy"][0])
        forces = out["forces"].cpu().double().numpy()
        results: dict[str, Any] = {"energy": energy, "free_energy": energy, "forces": forces}
        if want_stress:
            results["stress"] = out["stress"][0].cpu().double().numpy()
        for name, value in results.items():
            if not np.all(np.isfinite(value)):
                raise FloatingPointError(f"ETN returned a non-finite {name}; the structure is "
                                         "probably far outside the training data")
        self.results.update(results)
