"""Intracellular APs from extracellular recordings (physics-informed attention U-Net).

Modules: :mod:`.electrode` (eAP model), :mod:`.windows` (segmentation, normalization, APD),
:mod:`.pairs` (paired windows on Ray), :mod:`.physics` (Aliev-Panfilov residual),
:mod:`.unet` (network), :mod:`.losses`, :mod:`.train`, :mod:`.evaluate`, :mod:`.infer`,
:mod:`.figures`, :mod:`.tuning`, :mod:`.cli_args`.
"""
