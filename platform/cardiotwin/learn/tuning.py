"""Hyperparameter search with Ray Tune: architecture, width, depth, learning rate and batch
size, with ASHA early stopping (trials are cut at ``grace_period``, 3x, 9x ... epochs when
their validation loss is in the worse two thirds). One GPU per trial when the cluster has GPUs,
one CPU otherwise. The data are read once and shared with every trial through the object
store. The best trial's network (lowest final validation loss among finished trials) is
evaluated on the test split and written as a model artifact, with ``best_config.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..resources import training_resources
from .config import PRESETS, preset


def default_search_space() -> dict[str, Any]:
    from ray import tune

    return {"architecture": tune.choice(["fc", "ridge_mlp"]),
            "width": tune.choice([128, 256, 512, 1024]),
            "depth": tune.choice([1, 2, 4, 8]),
            "learning_rate": tune.loguniform(1e-4, 3e-3),
            "batch_size": tune.choice([16, 32, 64, 128])}


def _trial(config: dict[str, Any], prep, base: str, max_epochs: int) -> None:
    """One Tune trial: train, report the validation loss every epoch, save the model at the
    end as the trial's checkpoint."""
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


def tune_hyperparameters(stores, out_dir: str | Path, *, base: str = "ridge_mlp",
                         search_space: dict[str, Any] | None = None, num_samples: int = 8,
                         max_epochs: int = 50, grace_period: int = 5,
                         max_cells: int | None = None, protocol=None, seed: int = 0,
                         num_cpus: int | None = None, ray_address: str | None = None,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Search, then write ``out_dir/best_config.json``, ``out_dir/trials.csv`` and the best
    network as an artifact in ``out_dir/best_model``. Returns the best config and its test
    metrics. ``base``: the preset the sampled values override."""
    import keras
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
    space = search_space or default_search_space()
    prep = load_prepared(stores, preset(base), protocol=protocol, max_cells=max_cells)
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
        with best.checkpoint.as_directory() as d:
            model = keras.saving.load_model(Path(d) / "model.keras", compile=False)
            info = json.loads((Path(d) / "history.json").read_text())
        cfg = preset(base, **{**best.config, "epochs": max_epochs})
        meta = write_model_artifact(out / "best_model", model, prep, cfg, info["history"],
                                    info["wall_s"], overwrite=True, log=log)
    summary = {"base": base, "best_config": cfg.model_dump(mode="json"),
               "sampled": best.config, "val_loss": best.metrics["val_loss"],
               "test_metrics": meta["test_metrics"], "n_trials": len(results),
               "n_finished": len(done), "gpus_per_trial": gpus, "wall_s": wall,
               "artifact": str(out / "best_model")}
    write_json_atomic(out / "best_config.json", jsonable(summary))
    log(f"best of {len(results)} trials: {best.config}; test median MAE "
        f"{meta['test_metrics']['median_mae_unit']:.4f} -> {out / 'best_config.json'}")
    return summary
