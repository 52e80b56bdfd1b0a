"""The model: the CALR meta-architecture and what it is built from.

``meta_arch`` (CALR: FastReID's Baseline + cluster memory + camera classifier), ``memory``
(the cluster memory and its weighted contrastive loss), ``domain_head`` (the camera classifier
behind gradient reversal), ``chunk_bn`` (BatchNorm over fixed-size image chunks),
``timm_backbone`` (timm models as FastReID backbones) and ``build`` (the one ``build_model``).
Importing ``calr_plugin`` registers the meta-architecture and the backbone with FastReID.
"""
