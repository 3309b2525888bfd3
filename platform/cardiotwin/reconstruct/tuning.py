"""Ray Tune search over the loss weights (alpha, beta) and the architecture (filters, depth,
kernel) and learning rate of the reconstruction network, with ASHA early stopping.

Trials are compared on the validation MAE of the median (normalized iAP units), not on the
validation loss: the loss changes with alpha and beta (and log L_physics may be negative), so
its values are not comparable across trials. The data are normalized once and shared with the
trials through the object store; one CPU per trial (one GPU when the cluster has GPUs). The
best trial's network is evaluated on the test split and written as a model artifact
(``out_dir/best_model``) with ``out_dir/best_config.json`` and ``out_dir/trials.csv``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

METRIC = "val_median_mae"


def default_search_space() -> dict[str, Any]:
    from ray import tune

    return {"alpha": tune.choice([1.0]),
            "beta": tune.choice([0.0, 0.001, 0.01, 0.05]),
            "filters": tune.choice([8, 16, 32]),
            "depth": tune.choice([3, 4, 5]),
            "kernel_size": tune.choice([5, 7, 9]),
            "learning_rate": tune.loguniform(5e-4, 5e-3)}


def config_from_sample(base, sample: dict[str, Any], epochs: int):
    """A ReconTrainConfig from ``base`` with the sampled values (net fields go to ``net``)."""
    from .unet import NetConfig

    net_keys = set(NetConfig.model_fields)
    top = {k: v for k, v in sample.items() if k not in net_keys}
    net = base.net.model_copy(update={k: v for k, v in sample.items() if k in net_keys})
    return base.model_copy(update={**top, "net": NetConfig(**net.model_dump()),
                                   "epochs": epochs})


def _trial(sample: dict[str, Any], data, base, epochs: int) -> None:
    import keras
    from ray import tune

    from ..storage.atomic import jsonable
    from .train import fit

    cfg = config_from_sample(base, sample, epochs)

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 < self.params.get("epochs", epochs):
                tune.report({METRIC: float(logs[METRIC]), "epoch": epoch + 1})

    model, hist, wall = fit(cfg, data, extra_callbacks=[Report()])
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d) / "model.keras")
        (Path(d) / "history.json").write_text(json.dumps(jsonable({"history": hist,
                                                                    "wall_s": wall})))
        tune.report({METRIC: float(min(hist[METRIC])), "epoch": len(hist["loss"]),
                     "done": True}, checkpoint=tune.Checkpoint.from_directory(d))


def tune_reconstruction(stores, out_dir: str | Path, *, base=None,
                        search_space: dict[str, Any] | None = None, num_samples: int = 8,
                        max_epochs: int = 30, grace_period: int = 4, seed: int = 0,
                        num_cpus: int | None = None, ray_address: str | None = None,
                        log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the search on pair store(s) (or prepared :class:`.train.PairData`); returns the
    best config, its validation MAE and test metrics (also in ``out_dir/best_config.json``)."""
    import keras
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ..runtime.ray_setup import ray_session
    from ..storage.atomic import atomic_path, jsonable, write_json_atomic
    from ..storage.outdir import check_writable
    from .evaluate import evaluate, without_arrays
    from .train import PairData, ReconTrainConfig, load_pair_data, predict, save_artifact

    if num_samples < 1 or max_epochs < 1 or grace_period < 1:
        raise ValueError("num_samples, max_epochs and grace_period must be >= 1")
    base = base or ReconTrainConfig()
    out = check_writable(Path(out_dir).resolve())
    data = stores if isinstance(stores, PairData) else load_pair_data(stores)
    if not len(data.x["val"]):
        raise ValueError("the pair store(s) have no validation windows (cell_id % 10 == 8)")
    with ray_session(num_cpus, ray_address, "auto"):
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        trainable = tune.with_resources(
            tune.with_parameters(_trial, data=data, base=base, epochs=max_epochs),
            {"cpu": 1, "gpu": gpus})
        sched = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                              grace_period=min(grace_period, max_epochs), reduction_factor=3)
        t0 = time.perf_counter()
        results = tune.Tuner(
            trainable, param_space=search_space or default_search_space(),
            tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=sched,
                                        num_samples=num_samples,
                                        search_alg=tune.search.BasicVariantGenerator(
                                            random_state=seed)),
            run_config=tune.RunConfig(name="reconstruct", storage_path=str(out / "tune"),
                                      verbose=0)).fit()
        wall = time.perf_counter() - t0
        done = [r for r in results if r.checkpoint is not None and not r.error]
        if not done:
            raise RuntimeError(f"no trial finished (errors: {results.num_errors}); see "
                               f"{out / 'tune'}")
        best = min(done, key=lambda r: r.metrics[METRIC])
        with atomic_path(out / "trials.csv") as tmp:
            results.get_dataframe().to_csv(tmp, index=False)
        with best.checkpoint.as_directory() as d:
            model = keras.saving.load_model(Path(d) / "model.keras", compile=False)
            info = json.loads((Path(d) / "history.json").read_text())
    cfg = config_from_sample(base, best.config, max_epochs)
    q = cfg.net.quantile_levels
    metrics = {}
    if len(data.x["test"]):
        metrics = without_arrays(evaluate(data.y["test"][..., 0],
                                          predict(model, data.x["test"], len(q)),
                                          data.window, q))
    save_artifact(out / "best_model", model, cfg, data.window, history=info,
                  data_info=data.info, test_metrics=metrics, overwrite=True)
    summary = jsonable({"best_config": cfg.model_dump(mode="json"), "sampled": best.config,
                       METRIC: best.metrics[METRIC], "test_metrics": metrics,
                       "n_trials": len(results), "n_finished": len(done),
                       "gpus_per_trial": gpus, "wall_s": wall,
                       "artifact": str(out / "best_model")})
    write_json_atomic(out / "best_config.json", summary)
    if log:
        log(f"best of {len(results)} trials: {best.config}; val MAE "
            f"{best.metrics[METRIC]:.4f} -> {out / 'best_config.json'}")
    return summary
