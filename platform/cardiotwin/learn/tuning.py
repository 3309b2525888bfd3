"""Hyperparameter search with Ray Tune, with ASHA early stopping (trials are cut at
``grace_period``, 3x, 9x ... epochs when their validation loss is in the worse two thirds).

The space (:func:`default_search_space`) follows the base preset's family: for the posterior
flow (``posterior_flow``, the default base, or ``small_flow``) the flow's coupling layers and
their width, the context size, the embedding MLP, learning rate, batch size, dropout, feature
noise and PCA components; for ``fc`` / ``ridge_mlp`` the architecture, width, depth, learning
rate and batch size. The trial metric is the validation loss: the flow's negative
log-likelihood (nats per cell), the MSE on the unit scale otherwise, so one search never mixes
the two families. One GPU per trial when the cluster has GPUs, one CPU otherwise. The data are
read once, with the base preset and the space's fixed values, and shared with every trial
through the object store, so the fields that set how the data are read (:data:`DATA_FIELDS`)
can't be sampled. The best trial's network (lowest final validation loss among finished
trials) is evaluated on the test split and written as a model artifact (for a flow, with the
calibration in ``metadata["posterior"]``), with ``best_config.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..resources import training_resources
from .config import DEFAULT_PRESET, PRESETS, preset

DATA_FIELDS = ("input", "input_pool", "fast_window_ms", "medium_window_ms", "medium_bin_ms",
               "slow_bin_ms", "statuses", "input_noise_pA_per_pF")
"""TrainConfig fields that set how the stores are read and prepared (one value per search)."""


def default_search_space(base: str = DEFAULT_PRESET) -> dict[str, Any]:
    """The Tune search space for the family of the preset ``base``."""
    from ray import tune

    if base not in PRESETS:
        raise ValueError(f"unknown base preset {base!r}; expected one of {', '.join(PRESETS)}")
    if PRESETS[base].get("architecture") == "flow":
        return {"flow_layers": tune.choice([2, 4, 6, 8]),
                "flow_hidden": tune.choice([64, 128, 256, 512]),
                "context_dim": tune.choice([32, 64, 128, 256]),
                "width": tune.choice([128, 256, 512]),
                "depth": tune.choice([1, 2, 3]),
                "learning_rate": tune.loguniform(1e-4, 3e-3),
                "batch_size": tune.choice([64, 128, 256]),
                "dropout": tune.uniform(0.0, 0.3),
                "feature_noise": tune.uniform(0.0, 0.5),
                "pca_components": tune.choice([64, 96, 128, 192, 256])}
    return {"architecture": tune.choice(["fc", "ridge_mlp"]),
            "width": tune.choice([128, 256, 512, 1024]),
            "depth": tune.choice([1, 2, 4, 8]),
            "learning_rate": tune.loguniform(1e-4, 3e-3),
            "batch_size": tune.choice([16, 32, 64, 128])}


def _values(v: Any) -> list[Any] | None:
    """The values a search-space entry can take; None for a continuous domain."""
    from ray.tune.search.sample import Categorical, Domain

    if isinstance(v, Categorical):
        return list(v.categories)
    if isinstance(v, dict) and set(v) == {"grid_search"}:
        return list(v["grid_search"])
    return None if isinstance(v, Domain) else [v]


def _is_sampled(v: Any) -> bool:
    from ray.tune.search.sample import Domain

    return isinstance(v, Domain) or (isinstance(v, dict) and set(v) == {"grid_search"})


def check_search_space(space: dict[str, Any], base: str) -> dict[str, Any]:
    """Check ``space`` against ``base``; returns its fixed (not sampled) values. ValueError when
    a data field (:data:`DATA_FIELDS`) is sampled or the architectures mix the flow (loss:
    NLL) with the point networks (loss: MSE)."""
    sampled = sorted(k for k in DATA_FIELDS if k in space and _is_sampled(space[k]))
    if sampled:
        raise ValueError(f"search space: {', '.join(sampled)} sampled, but the data are read "
                         "once for every trial; give each one value")
    arch = _values(space.get("architecture", PRESETS[base].get("architecture", "fc")))
    if arch is None:
        raise ValueError("search space: architecture is a continuous domain; expected "
                         "tune.choice or one value")
    if len({a == "flow" for a in arch}) > 1:
        raise ValueError(f"search space: architecture {arch} mixes flow with fc/ridge_mlp; "
                         "their validation losses (NLL vs MSE) are not comparable")
    return {k: v for k, v in space.items() if not _is_sampled(v)}


def _trial(config: dict[str, Any], prep, base: str, max_epochs: int) -> None:
    """One Tune trial: train, report the validation loss every epoch, save the model (for a
    flow, the full model: trainer and sampler share its layers) at the end as the trial's
    checkpoint."""
    import keras
    from ray import tune

    from ..storage.atomic import jsonable
    from .train import fit_network

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 < self.params.get("epochs", max_epochs):
                tune.report({"val_loss": float(logs["val_loss"]), "epoch": epoch + 1})

    cfg = preset(base, **{**config, "epochs": max_epochs})
    model, history, wall = fit_network(cfg, prep, verbose=False, extra_callbacks=[Report()])
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d) / "model.keras")
        (Path(d) / "history.json").write_text(json.dumps(jsonable({"history": history,
                                                                    "wall_s": wall})))
        tune.report({"val_loss": float(min(history["val_loss"])), "epoch": len(history["loss"]),
                     "done": True}, checkpoint=tune.Checkpoint.from_directory(d))


def _load_trial_model(path: Path, cfg):
    """A trial's saved network: the flow has custom layers (:func:`load_flow_model`)."""
    if cfg.architecture == "flow":
        from .posterior import load_flow_model

        return load_flow_model(path)
    import keras

    return keras.saving.load_model(path, compile=False)


def tune_hyperparameters(stores, out_dir: str | Path, *, base: str = DEFAULT_PRESET,
                         search_space: dict[str, Any] | None = None, num_samples: int = 8,
                         max_epochs: int = 50, grace_period: int = 5,
                         max_cells: int | None = None, protocol=None, seed: int = 0,
                         num_cpus: int | None = None, ray_address: str | None = None,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Search, then write ``out_dir/best_config.json``, ``out_dir/trials.csv`` and the best
    network as an artifact in ``out_dir/best_model``. Returns the best config and its test
    metrics. ``base``: the preset the sampled values override; ``search_space``: default
    :func:`default_search_space` of ``base``."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ..runtime.ray_setup import ray_session
    from ..storage.atomic import atomic_path, jsonable, write_json_atomic
    from ..storage.outdir import check_writable
    from .train import load_prepared, write_model_artifact

    if base not in PRESETS:
        raise ValueError(f"unknown base preset {base!r}; expected one of {', '.join(PRESETS)}")
    if num_samples < 1 or max_epochs < 1 or grace_period < 1:
        raise ValueError("num_samples, max_epochs and grace_period must be >= 1")
    out = check_writable(Path(out_dir).resolve())
    space = search_space or default_search_space(base)
    fixed = check_search_space(space, base)
    prep = load_prepared(stores, preset(base, **fixed), protocol=protocol, max_cells=max_cells)
    with ray_session(num_cpus, ray_address, "auto"):
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        trainable = tune.with_resources(
            tune.with_parameters(_trial, prep=prep, base=base, max_epochs=max_epochs),
            {"cpu": 1, "gpu": gpus, **training_resources()})
        sched = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                              grace_period=min(grace_period, max_epochs), reduction_factor=3)
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric="val_loss", mode="min", scheduler=sched,
                                        num_samples=num_samples,
                                        search_alg=tune.search.BasicVariantGenerator(
                                            random_state=seed)),
            run_config=tune.RunConfig(name="hyperparameters", storage_path=str(out / "tune"),
                                      verbose=1))
        results = tuner.fit()
        wall = time.perf_counter() - t0
        done = [r for r in results if r.checkpoint is not None and not r.error]
        if not done:
            raise RuntimeError(f"no trial finished (errors: {results.num_errors}); see "
                               f"{out / 'tune'}")
        best = min(done, key=lambda r: r.metrics["val_loss"])
        with atomic_path(out / "trials.csv") as tmp:
            results.get_dataframe().to_csv(tmp, index=False)
        cfg = preset(base, **{**best.config, "epochs": max_epochs})
        with best.checkpoint.as_directory() as d:
            model = _load_trial_model(Path(d) / "model.keras", cfg)
            info = json.loads((Path(d) / "history.json").read_text())
        meta = write_model_artifact(out / "best_model", model, prep, cfg, info["history"],
                                    info["wall_s"], overwrite=True, log=log)
    summary = {"base": base, "best_config": cfg.model_dump(mode="json"),
               "sampled": best.config, "val_loss": best.metrics["val_loss"],
               "test_metrics": meta["test_metrics"], "n_trials": len(results),
               "n_finished": len(done), "gpus_per_trial": gpus, "wall_s": wall,
               "artifact": str(out / "best_model")}
    write_json_atomic(out / "best_config.json", jsonable(summary))
    coverage = ""
    if "posterior" in meta:
        cov = meta["posterior"]["calibration"]["coverage"]
        coverage = f", posterior coverage 50% {cov['0.5']:.3f} / 90% {cov['0.9']:.3f}"
    log(f"best of {len(results)} trials: {best.config}; test median MAE "
        f"{meta['test_metrics']['median_mae_unit']:.4f}{coverage} -> "
        f"{out / 'best_config.json'}")
    return summary
