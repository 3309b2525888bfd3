"""Loss of the reconstruction network: alpha * data + beta * log(L_physics).

- data: L1 on the median (n_q = 1) or the summed pinball loss of the quantiles (n_q = 3:
  rho_q(e) = max(q e, (q - 1) e), e = target - prediction; rho_0.5 = L1 / 2), mean over time;
- L_physics: mean over the window of F_AP^2 (:mod:`.physics`) of the predicted median, with
  the predicted (a, k, x); its log makes the term scale-free (gradient = grad L / L). The log
  is taken of L_physics + ``PhysicsConfig.log_floor``: a flat trace satisfies the AP equation
  almost exactly (F_AP = -eps k a v^2 at rest), so log(L_physics) alone keeps rewarding
  flattening without bound and, in our runs, drove the prediction flat (MAE 0.31).
beta = 0 leaves the physics term out. Per-sample values; Keras averages them over the batch.
"""

from __future__ import annotations

from .physics import PhysicsConfig, residual_of_trace


def pinball(target, pred, q: float):
    """rho_q(target - pred) elementwise (Keras ops)."""
    import keras

    e = target - pred
    return keras.ops.maximum(q * e, (q - 1.0) * e)


def make_loss(quantiles: tuple[float, ...], alpha: float, beta: float, dt_ms: float,
              physics: PhysicsConfig):
    """Loss function (y_true (B, L, 1), y_pred (B, L, n_q + 3)) -> (B,)."""
    import keras

    ops = keras.ops
    nq = len(quantiles)
    med = quantiles.index(0.5)

    def data_term(y, yp):
        if nq == 1:
            return ops.mean(ops.abs(y[..., 0] - yp[..., 0]), axis=-1)
        return sum(ops.mean(pinball(y[..., 0], yp[..., i], q), axis=-1)
                   for i, q in enumerate(quantiles))

    def physics_term(yp):
        v = yp[..., med]
        u = yp[:, 0, nq:nq + 3]
        a = physics.from_unit(u[:, 0:1], "a")
        k = physics.from_unit(u[:, 1:2], "k")
        x = physics.from_unit(u[:, 2:3], "x")
        r = residual_of_trace(v, dt_ms, a, k, x, physics, tanh=ops.tanh)
        return ops.mean(r * r, axis=-1)

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        total = alpha * data_term(y_true, y_pred)
        if beta:
            total = total + beta * ops.log(physics_term(y_pred) + physics.log_floor)
        return total

    loss.data_term = data_term
    loss.physics_term = physics_term
    return loss


def make_metrics(quantiles: tuple[float, ...]):
    """MAE of the median (normalized iAP units) as a Keras metric function."""
    import keras

    med = quantiles.index(0.5)

    def median_mae(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(keras.ops.cast(y_true[..., 0], y_pred.dtype)
                                            - y_pred[..., med]), axis=-1)

    return [median_mae]
