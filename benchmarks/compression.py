"""Descriptor compression on MoNbTaW energies: Sommer & Dunham, Sec. IV D, Fig. 17 and Table I.

Data: MoNbTaW (Li et al. 2020, maml), ``entangle.data.load("monbtaw")``. The paper uses BA10
(15,950 binary alloys, not available here) with 1,600 training and 1,000 test structures; we
draw the same sizes at random from the 5,658 MoNbTaW structures (``--n-train``, ``--n-test``)
and carve 20% of the training structures off for validation (early stopping).

Target: energy per atom minus a linear fit in the composition (per-element energies by least
squares on the training structures), meV/atom; the analogue of BA10's mixing energy.

Input state: SOAP power spectrum (n_max = l_max = 8, r_c = 5 Å, sigma = 0.5 Å, species Mo Nb Ta
W), averaged per structure (eq. 22); only the independent entries are kept (4,752), each
standardised with the training mean and standard deviation, and the vector is zero-padded to
8**5 = 32,768 entries, i.e. 5 sites of physical dimension d_in = 8 (14.5% of the entries are
data: with 4 species the padding is much larger than with BA10's 10 species, where 29,160 of
the 32,768 entries are data).

* ``fig17``: TT-SVD of every input with maximum bond ``chi_in`` (:func:`factorize_descriptors`),
  then a supervised MPS (chi = 10) trained on the factorised inputs; test RMSE/MAE vs chi_in,
  the number of input parameters N_in and the relative reconstruction error.
* ``table1``: MPO autoencoders (5 sites, chi_enc = chi_dec = 6) with d_latent = 6, 4, 2 trained
  on the training inputs; test reconstruction RMSE/MAE over the data entries (r-Error, in units
  of the standardised entries), compression d_latent**5 / d_in**5, and the test error of a
  supervised MPS (chi = 10) on the encoded tensors (s-Error); the first row is the MPS on the
  uncompressed input.

Run (from the repository root)::

    PYTHONPATH=src python benchmarks/compression.py --out runs/bench/compression

prints one JSON object and writes ``compression.json`` and ``compression.png`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from entangle import io
from entangle.data import load
from entangle.descriptors import SOAPConfig
from entangle.descriptors.compress import (
    AutoencoderConfig, MPOAutoencoder, factorize_descriptors, fit_autoencoder, independent_entries, pad_to_sites,
)
from entangle.train.descriptor_fit import DEFAULT_CONFIG, build_model, compute_descriptors, n_parameters, train_model

SPECIES = ("Mo", "Nb", "Ta", "W")
SUPERVISED = {"kind": "mps", "chi": 10}
SUPERVISED_TRAIN = dict(DEFAULT_CONFIG["train"], epochs=1500, patience=100, lr=1e-2, batch_size=None)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(n_train: int, n_test: int, seed: int, cache: str | None, r_cut: float, sigma: float) -> dict:
    """Sampled structures, descriptors, standardised padded input states and targets."""
    dataset = load("monbtaw")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset), size=n_train + n_test, replace=False)
    structures = [dataset[int(k)] for k in chosen]
    settings = SOAPConfig(species=SPECIES, r_cut=r_cut, n_max=8, l_max=8, sigma=sigma)
    t0 = time.perf_counter()
    b2 = compute_descriptors(structures, settings, cache_dir=cache, progress=True)  # [n, 4, 4, 8, 8, 9]
    descriptor_s = time.perf_counter() - t0
    flat = independent_entries(b2)  # [n, 4752]
    n_val = round(0.2 * n_train)
    val, train, test = np.arange(n_val), np.arange(n_val, n_train), np.arange(n_train, n_train + n_test)
    mean, std = flat[train].mean(0), flat[train].std(0)
    std = torch.where(std > 1e-12 * std.max(), std, torch.ones_like(std))
    states = pad_to_sites((flat - mean) / std, 8, 5)  # [n, 8, 8, 8, 8, 8]

    numbers = [np.array([np.sum(s.numbers == z) for z in (42, 41, 73, 74)]) / s.n_atoms for s in structures]
    composition = np.array(numbers)  # [n, 4] atomic fractions
    energy = np.array([1000.0 * s.energy / s.n_atoms for s in structures])  # meV/atom
    mu, *_ = np.linalg.lstsq(composition[train], energy[train], rcond=None)
    target = torch.from_numpy(energy - composition @ mu)
    return {"states": states, "target": target, "train": train, "val": val, "test": test,
            "n_independent": int(flat.shape[1]), "descriptor_s": descriptor_s, "soap": settings.to_dict(),
            "target_std_mev_per_atom": float(target[train].std())}


def supervised(x: torch.Tensor, data: dict, seed: int) -> dict:
    """MPS (chi = 10) on inputs ``x: (n, *dims)``; test RMSE/MAE in meV/atom."""
    y, tr, va, te = data["target"], data["train"], data["val"], data["test"]
    model = build_model(SUPERVISED, x.shape[1:], seed)
    t0 = time.perf_counter()
    info = train_model(model, "mps", SUPERVISED_TRAIN, x[tr], y[tr], x[va], y[va], seed)
    model.eval()
    with torch.no_grad():
        error = (model(x[te]) - y[te]).numpy()
    return {"test_rmse_mev_per_atom": float(np.sqrt(np.mean(error**2))),
            "test_mae_mev_per_atom": float(np.mean(np.abs(error))), "n_parameters": n_parameters(model),
            "fit_wall_s": time.perf_counter() - t0, **info}


def fig17(data: dict, chis: list[int], seed: int) -> list[dict]:
    states = data["states"]
    norms = states.reshape(states.shape[0], -1).norm(dim=1)
    rows = []
    for chi in [*chis, None]:
        t0 = time.perf_counter()
        if chi is None:
            x, n_in, rel = states, float(states[0].numel()), 0.0
        else:
            factorized = factorize_descriptors(states, max_bond=chi)
            x = factorized.to_dense()
            n_in = float(factorized.n_parameters().double().mean())
            rel = float((factorized.discarded / norms).mean())
        factor_s = time.perf_counter() - t0
        row = {"chi_in": chi, "n_input_parameters_mean": n_in, "relative_reconstruction_error_mean": rel,
               "factorize_wall_s": factor_s, **supervised(x, data, seed)}
        _log(f"fig17 chi_in={chi}: N_in={n_in:.0f} rel.err={rel:.3g} test RMSE "
             f"{row['test_rmse_mev_per_atom']:.2f} MAE {row['test_mae_mev_per_atom']:.2f} meV/atom")
        rows.append(row)
    return rows


def table1(data: dict, latents: list[int], n_ae_train: int, epochs: int, seed: int) -> list[dict]:
    states, tr, va, te = data["states"], data["train"], data["val"], data["test"]
    mask = torch.zeros(states[0].numel(), dtype=torch.bool)
    mask[: data["n_independent"]] = True  # data entries (the rest is zero padding)
    rows = [{"d_latent": None, "compression": 1.0, "reconstruction_rmse": None, "reconstruction_mae": None,
             **supervised(states, data, seed)}]
    _log(f"table1 uncompressed: s-Error {rows[0]['test_rmse_mev_per_atom']:.2f} "
         f"({rows[0]['test_mae_mev_per_atom']:.2f}) meV/atom")
    ae_train = tr[:n_ae_train]
    for latent in latents:
        model = MPOAutoencoder(AutoencoderConfig(n_sites=5, phys_dim=8, latent_dim=latent, chi=6, seed=seed,
                                                 dtype="float32"))
        t0 = time.perf_counter()
        history = fit_autoencoder(model, states[ae_train].float(), states[va].float(), epochs=epochs, lr=5e-3,
                                  batch_size=16, patience=5, seed=seed, progress=True)
        ae_s = time.perf_counter() - t0
        with torch.no_grad():
            encoded = torch.cat([model.encode(states[k:k + 100].float()) for k in range(0, len(states), 100)])
            recon = torch.cat([model.decode(encoded[k:k + 100]) for k in range(0, len(states), 100)])
        diff = (recon.double() - states).reshape(len(states), -1)[te][:, mask]  # [n_test, n_independent]
        row = {"d_latent": latent, "compression": model.compression,
               "reconstruction_rmse": float(diff.pow(2).mean().sqrt()),
               "reconstruction_mae": float(diff.abs().mean()),
               "autoencoder_parameters": model.num_parameters(), "autoencoder_epochs": len(history.train_loss),
               "autoencoder_initial_val_mse": history.initial_val_loss,
               "autoencoder_best_val_mse": history.best_val_loss,
               "autoencoder_wall_s": ae_s, **supervised(encoded.double(), data, seed)}
        _log(f"table1 d_latent={latent}: compression {row['compression']:.3g} r-Error {row['reconstruction_rmse']:.3f} "
             f"({row['reconstruction_mae']:.3f}) s-Error {row['test_rmse_mev_per_atom']:.2f} "
             f"({row['test_mae_mev_per_atom']:.2f}) meV/atom, autoencoder {ae_s:.0f} s")
        rows.append(row)
    return rows


def plot(results: dict, path: Path) -> None:
    import io as _io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["fig17"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    chis = [r["chi_in"] for r in rows if r["chi_in"] is not None]
    exact = rows[-1]
    ax = axes[0]
    for key, label in (("test_rmse_mev_per_atom", "RMSE"), ("test_mae_mev_per_atom", "MAE")):
        line = ax.plot([1 / c for c in chis], [r[key] for r in rows[:-1]], "o-", label=f"test {label}")
        ax.axhline(exact[key], ls="--", color=line[0].get_color(), lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("1 / chi_in")
    ax.set_ylabel("test error (meV/atom)")
    twin = ax.twinx()
    twin.plot([1 / c for c in chis], [r["n_input_parameters_mean"] for r in rows[:-1]], "k:", label="N_in")
    twin.set_yscale("log")
    twin.set_ylabel("N_in (mean input parameters)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Fig. 17: MPS-factorised inputs, supervised MPS chi=10")
    ax = axes[1]
    ax.axis("off")
    lines = ["d_latent  compression  r-Error RMSE (MAE)   s-Error RMSE (MAE) meV/atom"]
    for r in results["table1"]:
        rerr = "-" if r["d_latent"] is None else f"{r['reconstruction_rmse']:.3f} ({r['reconstruction_mae']:.3f})"
        lines.append(f"{'-' if r['d_latent'] is None else r['d_latent']:>8}  {r['compression']:.3g}  {rerr}  "
                     f"{r['test_rmse_mev_per_atom']:.1f} ({r['test_mae_mev_per_atom']:.1f})")
    ax.text(0, 0.9, "Table I: MPO autoencoder (chi=6)\n\n" + "\n".join(lines), family="monospace", fontsize=7,
            va="top")
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=1600)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--chi-in", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--latents", type=int, nargs="+", default=[6, 4, 2])
    parser.add_argument("--ae-train", type=int, default=1280,
                        help="training inputs of the autoencoders (a subset keeps d_latent=6 affordable on a CPU)")
    parser.add_argument("--ae-epochs", type=int, default=20)
    parser.add_argument("--r-cut", type=float, default=5.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["fig17", "table1"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/compression"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = prepare(args.n_train, args.n_test, args.seed, args.cache or None, args.r_cut, args.sigma)
    results = {"benchmark": "descriptor_compression_monbtaw", "n_train": args.n_train - len(data["val"]),
               "n_validation": len(data["val"]), "n_test": args.n_test, "soap": data["soap"],
               "n_independent_entries": data["n_independent"], "padded_size": 8**5, "phys_dim": 8, "n_sites": 5,
               "target": "energy per atom minus linear composition fit", "units": "meV/atom",
               "target_std_mev_per_atom": data["target_std_mev_per_atom"], "descriptor_wall_s": data["descriptor_s"],
               "supervised_model": SUPERVISED, "autoencoder_train_inputs": min(args.ae_train, len(data["train"])),
               "seed": args.seed, "threads": args.threads}
    if "fig17" not in args.skip:
        results["fig17"] = fig17(data, args.chi_in, args.seed)
    if "table1" not in args.skip:
        results["table1"] = table1(data, args.latents, args.ae_train, args.ae_epochs, args.seed)
    results["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(args.out / "compression.json", json.dumps(results, indent=2) + "\n")
    if "fig17" in results and "table1" in results:
        plot(results, args.out / "compression.png")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
