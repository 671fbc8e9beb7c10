"""Analysis of HFGD: pure functions from model outputs (tensors) to numbers (arrays).

One forward pass per image (preprocessing is :mod:`hfgd_lab.data`'s, the pass is the
engine's :func:`hfgd_lab.engine.infer`)::

    from hfgd_lab.analysis import analyze_image
    a = analyze_image(model, image_uint8, target=None, max_side=512)

then, without running the model again:

- class-token similarity: ``class_similarity(a, k)`` (F_high and F_up vs E_k),
  ``token_similarity(model.class_tokens)`` (K x K cosine);
- guidance vs upsampler: ``shared_pca(a)`` (one PCA basis, RGB), ``feature_agreement(a)``,
  ``decision_changes(a, target)`` (fixed / broke / both wrong);
- CAE attention: ``attention_at(a, x, y)``, ``class_attention(a, k)``,
  ``region_attention(a, mask)``, ``attention_rollout(attentions)``;
- embeddings: ``pixel_embedding(a, method="pca" | "tsne")``;
- scores: ``segmentation_scores(pred, target, K)``;
- the pretrained backbone's own ImageNet classifier on a photo: ``analyze_imagenet``.

:class:`AnalysisCache` keeps analysed images (and what is derived from them) for the app
and the notebooks alike.

On batches and models: ``gradient_norms(model, images, target)`` (stop-gradient probe),
``linear_cka(x, y)``, ``backbone_cka(model, pretrained, images)`` (drift per stage).

Drawing lives in :mod:`hfgd_lab.viz`; nothing here imports matplotlib.
"""
from .attention import (AttentionMaps, attention_at, attention_rollout, class_attention,
                        fuse_heads, mask_to_token_weights, query_attention, region_attention,
                        rollout_rows, token_index, token_map_to_image)
from .cache import (LRU, AnalysisCache, CachedAnalysis, digest_array, digest_bytes,
                    digest_file)
from .embedding import Embedding, embed, grid_labels, pixel_embedding
from .grid import cell_of_pixel, cells_to_image, crop_grid, resize_between_strides
from .guidance import (BOTH_WRONG, BROKE, FIXED, IGNORED, OUTCOME_NAMES, UNCHANGED,
                       DecisionChanges, FeatureAgreement, PCAColors, SharedPCA,
                       compare_predictions, decision_changes, feature_agreement, pca_colors,
                       shared_pca)
from .image import HIGH_STRIDE, ImageAnalysis, analyze_image
from .imagenet import ImageNetView, analyze_imagenet, imagenet_view
from .probes import (GradientNorms, backbone_cka, gradient_norms, linear_cka, module_groups,
                     stage_features)
from .scores import SegScores, normalize_confusion, scores_from_confusion, segmentation_scores
from .similarity import ClassSimilarity, class_similarity, feature_similarity, token_similarity

__all__ = [
    # one forward pass
    "ImageAnalysis", "analyze_image", "HIGH_STRIDE",
    # the one cache
    "LRU", "AnalysisCache", "CachedAnalysis", "digest_array", "digest_bytes", "digest_file",
    # the pretrained classifier
    "ImageNetView", "imagenet_view", "analyze_imagenet",
    # class-token similarity
    "ClassSimilarity", "class_similarity", "feature_similarity", "token_similarity",
    # guidance vs upsampler
    "PCAColors", "SharedPCA", "pca_colors", "shared_pca", "FeatureAgreement",
    "feature_agreement", "DecisionChanges", "compare_predictions", "decision_changes",
    "UNCHANGED", "FIXED", "BROKE", "BOTH_WRONG", "IGNORED", "OUTCOME_NAMES",
    # attention
    "AttentionMaps", "attention_at", "class_attention", "region_attention",
    "query_attention", "attention_rollout", "rollout_rows", "fuse_heads", "token_index",
    "token_map_to_image", "mask_to_token_weights",
    # probes
    "GradientNorms", "gradient_norms", "module_groups", "linear_cka", "stage_features",
    "backbone_cka",
    # embeddings and scores
    "Embedding", "embed", "pixel_embedding", "grid_labels",
    "SegScores", "segmentation_scores", "scores_from_confusion", "normalize_confusion",
    # grid alignment
    "cells_to_image", "resize_between_strides", "cell_of_pixel", "crop_grid",
]
