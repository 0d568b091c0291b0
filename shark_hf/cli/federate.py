"""`shark-hf federate`: federated training across cohort folders on one machine (Flower's ServerApp and
ClientApp of `shark_hf.federated`, in this process). A real deployment runs the same apps on a Flower
SuperLink and one SuperNode per hospital (README, "Federated training")."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..output_folder import RUN_MARKERS
from .common import Command, UserError, check_tokenizer_folder, is_local, load_cohort, positive


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _federate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", type=Path, nargs="+", required=True, help="One cohort folder per hospital.")
    p.add_argument(
        "--tokenizer",
        default="universal",
        help="Tokenizer folder or repo id shared by every site (default: the universal tokenizer).",
    )
    p.add_argument(
        "--rounds",
        type=positive,
        default=20,
        help="Federated rounds; the best one on pooled validation P@10 is kept (default: 20).",
    )
    p.add_argument(
        "--output_dir",
        "--output-dir",
        type=Path,
        required=True,
        help="Folder for the model the server writes.",
    )
    p.add_argument("--local-epochs", type=positive, default=1, help="Epochs per site per round (default: 1).")
    p.add_argument(
        "--strategy", choices=("fedavg", "fedprox"), default="fedavg", help="Aggregation (default: fedavg)."
    )
    p.add_argument(
        "--proximal-mu", type=_non_negative, default=0.01, help="FedProx's proximal weight (default: 0.01)."
    )
    p.add_argument(
        "--fraction-sites",
        type=_fraction,
        default=1.0,
        help="Share of the sites that train each round (default: 1).",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="Seed of initialisation, shuffling, sampling (default: 0)."
    )
    p.add_argument("--batch-size", type=positive, default=64, help="Patients per local batch (default: 64).")
    p.add_argument(
        "--learning-rate", type=float, default=1e-2, help="Local AdamW learning rate (default: 1e-2)."
    )
    p.add_argument(
        "--dp-clipping-norm",
        type=_non_negative,
        default=0.0,
        help="Clip each site's update to this L2 norm (Flower's client-side fixed clipping; 0: off).",
    )
    p.add_argument(
        "--dp-noise-multiplier",
        type=_non_negative,
        default=0.0,
        help="Gaussian noise std at the server, in units of clipping norm / sampled sites (default: 0).",
    )
    p.add_argument(
        "--overwrite_output_dir",
        "--overwrite-output-dir",
        action="store_true",
        help="Replace a previous run.",
    )


def _federate(args: argparse.Namespace) -> None:
    for site in args.sites:
        load_cohort(site, load=False)
    if args.tokenizer != "universal" and is_local(args.tokenizer, "tokenizer"):
        check_tokenizer_folder(Path(args.tokenizer))
    found = [name for name in RUN_MARKERS if (args.output_dir / name).exists()]
    if found and not args.overwrite_output_dir:
        raise UserError(
            f"--output_dir {args.output_dir} already holds a model ({', '.join(found)}): pass "
            "--overwrite_output_dir to replace it"
        )
    from ..federated import FederatedArguments, simulate

    federated = FederatedArguments(
        output_dir=str(args.output_dir),
        tokenizer=args.tokenizer,
        num_rounds=args.rounds,
        local_epochs=args.local_epochs,
        strategy=args.strategy,
        proximal_mu=args.proximal_mu,
        fraction_train=args.fraction_sites,
        seed=args.seed,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        dp_clipping_norm=args.dp_clipping_norm,
        dp_noise_multiplier=args.dp_noise_multiplier,
        overwrite_output_dir=args.overwrite_output_dir,
    )
    logging.getLogger("shark_hf").setLevel(logging.INFO)
    if not getattr(args, "verbose", False):
        logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's per-round reports with -v only
    results = simulate(args.sites, federated)
    cap = " (the last round: not converged, raise --rounds)" if results["best_round_at_cap"] else ""
    print(
        f"Best round {results['best_round']} of {results['rounds']}{cap}: pooled validation P@10 "
        f"{results['validation']['P@10']:.4f}, test P@10 {results['test']['P@10']:.4f} -> {args.output_dir}"
    )


COMMANDS: dict[str, Command] = {
    "federate": (
        _federate_args,
        _federate,
        "Train one model across hospitals' cohorts without pooling them (Flower, simulated on this machine).",
        (
            "shark-hf federate --sites hospital_a/ hospital_b/ --rounds 10 --output_dir runs/federated",
            "shark-hf federate --sites a/ b/ c/ --strategy fedprox --output_dir runs/fedprox",
        ),
    ),
}
