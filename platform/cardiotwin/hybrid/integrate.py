"""Fixed-step, differentiable RK4 in TensorFlow ops.

``integrate(f, x0, n_out, substeps, dt_ms)`` advances x' = f(t, x) from t = 0 with the classical
4th-order Runge-Kutta step dt_ms (0.1 ms by default in the fit) and returns the states every
``substeps`` steps. The outer loop is a ``tf.scan`` over the observations (gradients flow
through it); the ``substeps`` RK4 steps between two observations are unrolled in the loop body,
which keeps the loop short under XLA. Global error O(dt^4) for smooth f.
"""

from __future__ import annotations


def rk4_step(f, t, x, dt):
    """One classical RK4 step of x' = f(t, x)."""
    k1 = f(t, x)
    k2 = f(t + 0.5 * dt, x + (0.5 * dt) * k1)
    k3 = f(t + 0.5 * dt, x + (0.5 * dt) * k2)
    k4 = f(t + dt, x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def integrate(f, x0, n_out: int, substeps: int, dt_ms: float):
    """States at t = k * substeps * dt_ms, k = 0 ... n_out: tensor (n_out + 1, *x0.shape).

    f(t, x) -> dx/dt (same shape as x; t a scalar tensor in ms). n_out, substeps: Python ints.
    """
    import tensorflow as tf

    x0 = tf.convert_to_tensor(x0)
    dt = tf.constant(dt_ms, x0.dtype)
    t_obs = tf.range(n_out, dtype=x0.dtype) * (dt * substeps)

    def body(x, t_start):
        for s in range(substeps):
            x = rk4_step(f, t_start + s * dt, x, dt)
        return x

    traj = tf.scan(body, t_obs, initializer=x0)
    return tf.concat([x0[None], traj], axis=0)
