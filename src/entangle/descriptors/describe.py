"""Streaming SOAP power spectra of a whole dataset into one ``.npz`` file (``entangle describe``).

The output is written while it is computed: the ``.npz`` is a zip archive, and the
``power_spectrum.npy`` member is opened once with its final header and filled batch by batch,
so only one batch of descriptors is ever in memory. The archive is written to a temporary file
next to the destination and renamed over it at the end (atomic on POSIX), so an interrupted
run never leaves a truncated file under the requested name.

Members of the archive (``np.load(path)``):

* ``power_spectrum``: (n_atoms_total, S, S, n_max, n_max, l_max + 1) float64, the full ``B2``
  with DScribe's normalisation (:class:`~entangle.descriptors.SOAP` defaults), species axes in
  the order given; ``B2.reshape(n, -1)[:, dscribe_indices(species, n_max, l_max)]`` equals
  DScribe's ``SOAP(species, r_cut, n_max, l_max, sigma).create(...)``;
* ``structure_index``: (n_atoms_total,) int64 structure of each atom;
* ``species`` (S,) int64 atomic numbers; ``r_cut``, ``sigma`` float64 and ``n_max``,
  ``l_max`` int64 scalars.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from entangle.data import Dataset, Structure, load
from entangle.descriptors.soap import SOAP, SOAPConfig
from entangle.errors import ConfigError, DataError

__all__ = ["describe_file"]


def _structures(path_or_dataset: str | os.PathLike | Sequence[Structure]) -> Sequence[Structure]:
    if isinstance(path_or_dataset, (str, os.PathLike)):
        data = load(path_or_dataset)
        if not isinstance(data, Dataset):
            raise DataError(f"{os.fspath(path_or_dataset)!r} holds no atomic structures "
                            f"(got {type(data).__name__})", source=os.fspath(path_or_dataset))
        return data
    structures = list(path_or_dataset)
    for k, s in enumerate(structures):
        if not isinstance(s, Structure):
            raise DataError(f"expected a Structure, got {type(s).__name__}", index=k)
    return structures


def _write_array(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def describe_file(path_or_dataset: str | os.PathLike | Sequence[Structure],
                  out_npz: str | os.PathLike, species: Sequence[int | str], r_cut: float,
                  n_max: int, l_max: int, sigma: float, batch_size: int,
                  progress: bool = True) -> Path:
    """Compute the SOAP power spectrum of every atom of a dataset and stream it to ``out_npz``.

    Parameters
    ----------
    path_or_dataset : path, short dataset name, Dataset or sequence of Structure
        Anything :func:`entangle.data.load` reads, or the structures themselves.
    out_npz : path
        Destination file (replaced atomically when complete).
    species : sequence of atomic numbers or symbols
        Species axes of the output, in this order; every atom must be one of them.
    r_cut : float
        Cutoff radius, Å (> 1, the GTO basis of DScribe).
    n_max, l_max : int
        Number of radial functions and largest angular momentum.
    sigma : float
        Gaussian width, Å.
    batch_size : int
        Structures per batch (memory holds one batch of descriptors).
    progress : bool
        Show a tqdm progress bar over structures.

    Returns
    -------
    Path of the written file. Its members are described in the module docstring.

    Raises
    ------
    ConfigError
        Invalid hyperparameters or batch size.
    DataError
        Unreadable data, or an atom whose element is not in ``species`` (checked for the whole
        dataset before anything is computed or written).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    config = SOAPConfig(species=tuple(species), r_cut=r_cut,
                        n_max=n_max, l_max=l_max, sigma=sigma)
    soap = SOAP(config)
    structures = _structures(path_or_dataset)
    source = os.fspath(path_or_dataset) if isinstance(path_or_dataset, (str, os.PathLike)) \
        else None
    allowed = set(config.species)
    for k, s in enumerate(structures):
        unknown = sorted(set(int(z) for z in s.numbers) - allowed)
        if unknown:
            raise DataError(f"atomic numbers {unknown} are not among the species "
                            f"{list(config.species)}", source=s.source or source,
                            index=k if s.index is None else s.index, field="numbers")
    counts = np.array([s.n_atoms for s in structures], dtype=np.int64)
    n_total = int(counts.sum())
    n_species = len(config.species)
    shape = (n_total, n_species, n_species, n_max, n_max, l_max + 1)

    out = Path(out_npz)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)),
              "fortran_order": False, "shape": shape}
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                             allowZip64=True) as archive:
            with archive.open("power_spectrum.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                with tqdm(total=len(structures), unit="structure", disable=not progress,
                          desc="describe") as bar:
                    for start in range(0, len(structures), batch_size):
                        chunk = structures[start:start + batch_size]
                        with torch.no_grad():
                            b2 = soap(list(chunk)).power_spectrum  # [n, S, S, n, n, L]
                        block = np.ascontiguousarray(b2.numpy(), dtype=np.float64)
                        member.write(block.tobytes())
                        bar.update(len(chunk))
            _write_array(archive, "structure_index",
                         np.repeat(np.arange(len(structures), dtype=np.int64), counts))
            _write_array(archive, "species", np.asarray(config.species, dtype=np.int64))
            _write_array(archive, "r_cut", np.float64(r_cut))
            _write_array(archive, "sigma", np.float64(sigma))
            _write_array(archive, "n_max", np.int64(n_max))
            _write_array(archive, "l_max", np.int64(l_max))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out

