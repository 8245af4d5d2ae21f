"""Segmentation models for DALE: U-Net (Ronneberger 2015), UNet++ (Zhou 2018) and Attention
U-Net (Oktay 2018), plus adapters for segmentation_models_pytorch and arbitrary modules.

Every built-in model maps (B, in_channels, H, W) to logits (B, num_classes, H, W) for any H, W,
ends in ``segmentation_head`` whose input is the full-resolution feature map, and exposes
``feature_module`` / ``feature_channels`` plus ``forward(x, return_features=True)`` for DALE.
"""
from dale_ext.models._base import SegmentationModel
from dale_ext.models.attention_unet import AttentionGate, AttentionUNet
from dale_ext.models.registry import available_models, build_model
from dale_ext.models.smp import smp_model, wrap_model
from dale_ext.models.unet import UNet
from dale_ext.models.unet_plus_plus import UNetPlusPlus

__all__ = [
    "AttentionGate",
    "AttentionUNet",
    "SegmentationModel",
    "UNet",
    "UNetPlusPlus",
    "available_models",
    "build_model",
    "smp_model",
    "wrap_model",
]
