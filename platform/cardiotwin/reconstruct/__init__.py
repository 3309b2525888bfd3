"""Intracellular APs from extracellular recordings (physics-informed attention U-Net).

Modules: :mod:`.electrode` (eAP model), :mod:`.windows` (segmentation, normalization, APD),
:mod:`.pairs` (paired windows on Ray), :mod:`.physics` (Aliev-Panfilov residual),
:mod:`.unet` (network), :mod:`.losses`, :mod:`.stream` (pair stores streamed shard by
shard), :mod:`.train`, :mod:`.conformal` (calibrated bands), :mod:`.evaluate`, :mod:`.fast`
(compiled batched prediction), :mod:`.infer`, :mod:`.figures`, :mod:`.tuning`,
:mod:`.cli_args`.
"""
