"""Drawing of :mod:`hfgd_lab.analysis` results; never runs the model.

Plain-array helpers (numpy in, (H, W, 3) uint8 out), usable directly by a Gradio app:
``colorize``, ``overlay``, ``heatmap_rgb``, ``heatmap_overlay``, ``blend``,
``mark_point``, ``default_palette``.

Figures (each returns a :class:`matplotlib.figure.Figure`, object-oriented API, no
pyplot, Agg-safe): ``plot_segmentation``, ``plot_prediction``, ``plot_prediction_grid``,
``plot_class_areas``, ``plot_heatmap``, ``plot_class_similarity``,
``plot_token_similarity``, ``plot_shared_pca``, ``plot_agreement``,
``plot_decision_changes``, ``plot_attention``, ``plot_embedding``, ``plot_confusion``,
``plot_iou``, ``plot_gradient_norms``, ``plot_cka``, ``plot_imagenet``. Text sizes:
``FONT_TITLE``, ``FONT``, ``FONT_SMALL`` (points; the smallest, ``MIN_FONT``, is 8 pt).
"""
from .colors import (as_palette, blend, colorize, default_palette, heatmap_overlay,
                     heatmap_rgb, mark_point, normalize_map, overlay, to_uint8)
from .figures import (FONT, FONT_SMALL, FONT_TITLE, MIN_FONT, OUTCOME_COLORS, outcome_rgb,
                      plot_agreement, plot_attention, plot_cka, plot_class_areas,
                      plot_class_similarity, plot_confusion, plot_decision_changes,
                      plot_embedding, plot_gradient_norms, plot_heatmap, plot_imagenet,
                      plot_iou, plot_prediction, plot_prediction_grid, plot_segmentation,
                      plot_shared_pca, plot_token_similarity)

__all__ = [
    "default_palette", "as_palette", "colorize", "blend", "overlay", "heatmap_rgb",
    "heatmap_overlay", "mark_point", "normalize_map", "to_uint8",
    "plot_segmentation", "plot_prediction", "plot_heatmap", "plot_class_similarity",
    "plot_token_similarity", "plot_shared_pca", "plot_agreement", "plot_decision_changes",
    "plot_attention", "plot_embedding", "plot_confusion", "plot_iou", "plot_gradient_norms",
    "plot_cka", "plot_prediction_grid", "plot_class_areas", "plot_imagenet",
    "OUTCOME_COLORS", "outcome_rgb", "FONT_TITLE", "FONT", "FONT_SMALL", "MIN_FONT",
]
