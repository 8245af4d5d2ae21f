"""DALE training: the exact confidence gradient, the DALE and standard trainers, losses,
checkpoints and evaluation (paper Eqs. 1-2, 8-15, Algorithm 1)."""
from dale_ext.train.checkpoint import load_checkpoint, save_checkpoint
from dale_ext.train.confidence import confidence_gradient
from dale_ext.train.config import TrainConfig
from dale_ext.train.evaluate import evaluate, predict
from dale_ext.train.features import FeatureCapture
from dale_ext.train.losses import PixelLoss, check_head, check_labels, head_targets, soft_dice_loss, soft_targets
from dale_ext.train.trainer import Confidence, DaleTrainer, Split, Trainer, build_trainer

__all__ = [
    "Confidence", "DaleTrainer", "FeatureCapture", "PixelLoss", "Split", "TrainConfig", "Trainer",
    "build_trainer", "check_head", "check_labels", "confidence_gradient", "evaluate", "head_targets", "load_checkpoint",
    "predict", "save_checkpoint", "soft_dice_loss", "soft_targets",
]
