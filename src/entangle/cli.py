"""The ``entangle`` command line. Each subcommand is a thin shell over a Python function.

    entangle --version | help
    entangle demo [etn|tnn] [--json]          entangle.experiments.{etn_demo,tnn_demo}
    entangle fit CONFIG.yaml --out DIR        task: nnmpo | etn | descriptor  (see examples/)
    entangle evaluate DIR DATA [--out FILE]   metrics of a saved model on any loadable data
    entangle predict DIR DATA --out FILE      predictions as .npz
    entangle describe STRUCTURES ...          SOAP power spectra streamed to .npz
    entangle vib DIR --n-states 20            vibrational levels of an NN-MPO by DMRG
    entangle analyze DIR                      entanglement diagnostics of a descriptor TN model

Dataset names and relative paths in configs are resolved by :func:`entangle.data.load`
(``$ENTANGLE_DATA``, default ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from entangle._version import __version__
from entangle.errors import ConfigError, EntangleError

__all__ = ["main", "build_parser"]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=float))


def _write_json(path: str | Path, obj: Any) -> None:
    from entangle.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def _read_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(config, dict) or "task" not in config:
        raise ConfigError(f"{path}: a config must be a mapping with a `task` key (nnmpo, etn or descriptor)")
    config["config_dir"] = str(Path(path).resolve().parent)
    return config


def _model_class(model_dir: str) -> str:
    from entangle.io import read_header

    return read_header(model_dir)["model_class"]


# ---------------------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.which == "tnn":
        from entangle.experiments import tnn_demo

        results = tnn_demo.run_all(out / "tnn", scale=args.scale, seed=args.seed, progress=not args.json)
        table = tnn_demo.format_table(results)
    else:
        from entangle.experiments import etn_demo

        results = etn_demo.run(out / "etn", progress=not args.json, seed=args.seed)  # prints its summary
        table = None
    if args.json:
        _print_json(results)
    else:
        if table:
            print(table)
        print(f"model, metrics and plots written to {out / args.which}/")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    config = _read_config(args.config)
    task = config.pop("task")
    out = Path(args.out)
    if task == "nnmpo":
        from entangle.train.nnmpo_trainer import fit_h2co as fit
    elif task == "etn":
        from entangle.train.trainer import fit_etn as fit
    elif task == "etn_grow":
        from entangle.train.hyper import grow_etn as fit
    elif task == "descriptor":
        from entangle.train.descriptor_fit import fit_descriptor_model as fit
    else:
        raise ConfigError(f"{args.config}: unknown task {task!r} "
                          "(nnmpo, etn, etn_grow or descriptor)")
    if args.device is not None:
        if task not in ("etn", "etn_grow"):
            raise ConfigError(f"{args.config}: --device applies to the etn and etn_grow tasks, "
                              f"not {task!r}")
        config.setdefault("train", {})["device"] = args.device
    metrics = fit(config, out)
    _write_json(out / "metrics.json", metrics)
    _print_json(metrics)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    cls = _model_class(args.model_dir)
    if cls == "NNMPO":
        from entangle import io
        from entangle.data import load
        from entangle.train.nnmpo_trainer import evaluate_arrays

        data = load(args.data)
        metrics = evaluate_arrays(io.load(args.model_dir), data.x, data.y, data.f)
    elif cls == "ETNPotential":
        from entangle.train.trainer import evaluate_etn

        metrics = evaluate_etn(args.model_dir, args.data)
    else:
        from entangle.train.descriptor_fit import evaluate_descriptor_model

        metrics = evaluate_descriptor_model(args.model_dir, args.data)
    if args.out:
        _write_json(args.out, metrics)
    _print_json(metrics)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from entangle import io
    from entangle.data import load

    cls = _model_class(args.model_dir)
    if cls == "NNMPO":
        from entangle.train.nnmpo_trainer import predict_arrays

        arrays = predict_arrays(io.load(args.model_dir), load(args.data).x)
    elif cls == "ETNPotential":
        results = io.load(args.model_dir).predict(load(args.data))
        arrays = {"energy": np.array([r["energy"] for r in results]),  # (n_structures,) eV
                  "forces": np.concatenate([r["forces"] for r in results])}  # (n_atoms_total, 3) eV/Å
        if all("stress" in r for r in results):
            arrays["stress"] = np.stack([r["stress"] for r in results])  # (n_structures, 6) eV/Å^3
    else:
        from entangle.train.descriptor_fit import predict_descriptor_model

        arrays = {"prediction": predict_descriptor_model(args.model_dir, args.data)}
    from entangle.io import atomic_write_bytes
    import io as _io

    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {', '.join(arrays)} to {args.out}")
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    from entangle.descriptors.describe import describe_file

    if args.descriptor != "soap":
        raise ConfigError(f"unknown descriptor {args.descriptor!r} (available: soap)")
    species = [s.strip() for s in args.species.split(",") if s.strip()]
    path = describe_file(args.structures, args.out, species, args.r_cut, args.n_max, args.l_max, args.sigma,
                         args.batch_size, progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def _cmd_vib(args: argparse.Namespace) -> int:
    from entangle import io
    from entangle.vib import vib_levels

    model = io.load(args.model_dir)
    if args.frequencies:
        frequencies = [float(f) for f in args.frequencies.split(",")]
    else:
        frequencies = getattr(model, "metadata", {}).get("harmonic_frequencies_cm1")
    if frequencies is None and args.basis == "ho-dvr":
        raise ConfigError("the HO-DVR needs the harmonic frequencies of the coordinates: pass "
                          "--frequencies w1,w2,... (cm^-1) or save them in the model's metadata")
    result = vib_levels(model, n_states=args.n_states, basis=args.basis.removesuffix("-dvr"), n_grid=args.n_grid,
                        frequencies=frequencies, max_bond=args.max_bond, method=args.method,
                        progress=not args.quiet)
    levels = [float(e) for e in result.levels_cm]
    summary = {"levels_cm1": levels, "zero_point_energy_cm1": float(result.zpe_cm), "method": result.method,
               "basis": args.basis, "n_grid": args.n_grid, "max_bond": args.max_bond, "seconds": result.seconds}
    out = Path(args.out) if args.out else Path(args.model_dir) / "vib_levels.json"
    _write_json(out, summary)
    print(f"zero-point energy {result.zpe_cm:.4f} cm^-1; levels above it (cm^-1):")
    for k, level in enumerate(levels):
        print(f"{k:4d} {level:12.4f}")
    print(f"levels written to {out}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from entangle import io
    from entangle.analysis import analyze_model

    out = Path(args.out) if args.out else Path(args.model_dir) / "analysis"
    summary = analyze_model(io.load(args.model_dir), out_dir=out)
    _print_json(summary)
    return 0


# ------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entangle", description="Machine learning on atoms and molecules "
                                     "with tensor networks.")
    parser.add_argument("--version", action="version", version=f"entangle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("help", help="list the subcommands")

    p = sub.add_parser("demo", help="run a demonstration job on data the project makes itself")
    p.add_argument("which", nargs="?", default="etn", choices=["etn", "tnn"],
                   help="etn: fit an ETN potential to shipped EMT data and run MD (default); "
                        "tnn: the four tensor-neural-network experiments of Jahromi & Orús")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--scale", type=float, default=1.0, help="tnn only: shrink data and sweeps (0 < scale <= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("fit", help="train a model from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="directory for model.safetensors/json, metrics.json, plots")
    p.add_argument("--device", help="etn and etn_grow tasks: train on this torch device (e.g. cuda), "
                                    "overriding the config's train.device")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("evaluate", help="metrics of a saved model on a dataset")
    p.add_argument("model_dir")
    p.add_argument("data", help="a file or a dataset name understood by entangle.data.load")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predictions of a saved model, written to .npz")
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("describe", help="SOAP power spectra of every atom, streamed to .npz")
    p.add_argument("structures")
    p.add_argument("--descriptor", default="soap")
    p.add_argument("--r-cut", type=float, required=True)
    p.add_argument("--n-max", type=int, required=True)
    p.add_argument("--l-max", type=int, required=True)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--species", required=True, help="comma-separated, in the order of the output axes")
    p.add_argument("--batch-size", type=int, default=64, help="structures per chunk")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser("vib", help="vibrational levels (cm^-1) of a saved NN-MPO by DMRG")
    p.add_argument("model_dir")
    p.add_argument("--n-states", type=int, default=20)
    p.add_argument("--basis", default="ho-dvr", choices=["ho-dvr", "sine-dvr"])
    p.add_argument("--n-grid", type=int, default=9)
    p.add_argument("--max-bond", type=int, default=32)
    p.add_argument("--method", default="dmrg", choices=["dmrg", "exact"])
    p.add_argument("--frequencies", help="harmonic frequencies (cm^-1) of the n coordinates, comma-separated "
                   "(default: the model's metadata)")
    p.add_argument("--out", help="JSON file (default: MODEL_DIR/vib_levels.json)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_vib)

    p = sub.add_parser("analyze", help="entanglement diagnostics (PNG + JSON) of a descriptor TN model")
    p.add_argument("model_dir")
    p.add_argument("--out", help="output directory (default: MODEL_DIR/analysis)")
    p.set_defaults(func=_cmd_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "help"):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except EntangleError as err:
        print(f"entangle {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"entangle {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
