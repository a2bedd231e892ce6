"""Training for the method layer: one trainer shared by all methods (SGD with momentum,
step-wise schedules, JSON-lines metrics, atomic safetensors checkpoints, exact resume,
data parallelism under torchrun) and the baseline methods built on it."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .distributed import (
    DistributedContext,
    barrier,
    init_distributed,
    resolve_device,
    shutdown_distributed,
    wrap_model,
)
from .eval_mode import eval_mode
from .fgsm_at import FGSMTraining
from .heads import train_heads
from .method import StandardTraining, TrainingMethod
from .optimizer import DEFAULT_NO_WEIGHT_DECAY, build_sgd
from .schedules import SCHEDULES, LRSchedule
from .seeds import derived_generator, derived_seed
from .trainer import METRICS_NAME, TrainConfig, TrainResult, accuracy, train

__all__ = [
    "DEFAULT_NO_WEIGHT_DECAY",
    "METRICS_NAME",
    "SCHEDULES",
    "Checkpoint",
    "DistributedContext",
    "FGSMTraining",
    "LRSchedule",
    "StandardTraining",
    "TrainConfig",
    "TrainResult",
    "TrainingMethod",
    "accuracy",
    "barrier",
    "build_sgd",
    "derived_generator",
    "derived_seed",
    "eval_mode",
    "init_distributed",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "shutdown_distributed",
    "train",
    "train_heads",
    "wrap_model",
]
