"""The training methods the CLI offers, built from its arguments."""

import argparse

from ..train import StandardTraining
from ..train.once_for_all import ONCE_FOR_ALL, training_method
from ..train.pgd_at import PGDAdversarialTraining
from ..train.trades import TRADES

__all__ = ["METHODS", "build_method"]

METHODS = {
    "standard": "cross-entropy on clean inputs (no adversarial training)",
    "pgd-at": "PGD adversarial training (Madry et al. 2018): cross-entropy on PGD examples",
    "trades": "TRADES (Zhang et al. 2019): clean cross-entropy + beta * KL(adversarial || clean)",
    **ONCE_FOR_ALL,
}


def build_method(args: argparse.Namespace):
    attack = {"eps": args.eps, "step": args.attack_step, "steps": args.attack_steps, "norm": args.norm}
    if args.method == "pgd-at":
        return PGDAdversarialTraining(**attack)
    if args.method == "trades":
        return TRADES(beta=args.beta, **attack)
    if args.method in ONCE_FOR_ALL:
        return training_method(args.method, **attack)
    return StandardTraining()
