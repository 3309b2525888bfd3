"""Node labels of a cardiotwin Ray cluster (cluster.yaml): simulation work goes to CPU nodes
labelled ``simulation_node``, training and Tune trials to GPU nodes labelled ``training_node``.

A job asks for a label (a token 0.001 of it, so the label never limits how many tasks fit a
node: CPUs and GPUs do) only when the cluster uses labels: when a live node has it, or when
``CARDIOTWIN_NODE_LABELS=1`` is set (cluster.yaml sets it on every node, so labels are asked for
even while the autoscaler has no such node up yet). On a local Ray nothing changes.
"""

from __future__ import annotations

import os

SIMULATION_LABEL = "simulation_node"
TRAINING_LABEL = "training_node"
LABEL_AMOUNT = 0.001
ENV_FLAG = "CARDIOTWIN_NODE_LABELS"


def uses_labels() -> bool:
    """True when the connected Ray cluster schedules by cardiotwin node labels."""
    if os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes"):
        return True
    import ray

    have = ray.cluster_resources()
    return have.get(SIMULATION_LABEL, 0) > 0 or have.get(TRAINING_LABEL, 0) > 0


def simulation_resources() -> dict[str, float]:
    """Custom resources of a simulation task or actor: ``{simulation_node: 0.001}`` or {}."""
    return {SIMULATION_LABEL: LABEL_AMOUNT} if uses_labels() else {}


def training_resources() -> dict[str, float]:
    """Custom resources of a training task or Tune trial: ``{training_node: 0.001}`` or {}."""
    return {TRAINING_LABEL: LABEL_AMOUNT} if uses_labels() else {}
