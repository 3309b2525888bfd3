"""1-D attention residual U-Net: normalized eAP window (length, 1) -> normalized iAP.

Encoder: per level a residual block of two CBR units (Conv1D - BatchNorm - ReLU) with
squeeze-and-excitation (channel attention), then a strided convolution (stride 2) halves the
length. Decoder: upsample x2, CBR, an additive attention gate weights the encoder skip
(Oktay et al. style: sigmoid(psi(relu(W_x skip + W_g g)))), concatenate, residual block.

Output (one tensor, so standard ``fit`` and losses apply): (length, n_q + 3) where channels
0 .. n_q-1 are the iAP (n_q = 1: the median only; n_q = 3: quantiles 0.05, 0.5, 0.95 as
median - softplus, median, median + softplus: never crossing), and the last 3 channels are the
Aliev-Panfilov parameters (a, k, x) on the unit interval (sigmoid; :class:`PhysicsConfig`
maps them to their ranges) from a small head on the bottleneck, repeated along time.
Only built-in Keras layers: the saved model loads without custom objects.
"""

from __future__ import annotations

from pydantic import Field

from ..settings import PositiveInt, Settings

N_AP_PARAMS = 3
BN_MOMENTUM = 0.9   # batch-norm moving statistics follow training within a few epochs
AP_PARAM_NAMES = ("a", "k", "x")


class NetConfig(Settings):
    """Architecture of the U-Net."""

    filters: int = Field(16, ge=2, description="channels of the first level (doubled per "
                                               "level)")
    depth: PositiveInt = Field(4, le=8, description="downsampling levels (length must be a "
                                                  "multiple of 2^depth)")
    kernel_size: PositiveInt = Field(7, description="convolution kernel (samples)")
    se_ratio: PositiveInt = Field(4, description="squeeze-and-excitation reduction ratio")
    max_filters: int = Field(64, ge=2, description="cap on channels per level")
    head_units: PositiveInt = Field(16, description="units of the (a, k, x) head")
    quantiles: bool = Field(True, description="predict the 0.05/0.5/0.95 quantiles (else the "
                                              "median only)")

    @property
    def n_quantiles(self) -> int:
        return 3 if self.quantiles else 1

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        return (0.05, 0.5, 0.95) if self.quantiles else (0.5,)


def _cbr(x, f: int, k: int, name: str, strides: int = 1):
    import keras

    L = keras.layers
    x = L.Conv1D(f, k, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _se(x, f: int, ratio: int, name: str):
    import keras

    L = keras.layers
    s = L.GlobalAveragePooling1D(name=f"{name}_squeeze")(x)
    s = L.Dense(max(2, f // ratio), activation="relu", name=f"{name}_reduce")(s)
    s = L.Dense(f, activation="sigmoid", name=f"{name}_excite")(s)
    s = L.Reshape((1, f), name=f"{name}_reshape")(s)
    return L.Multiply(name=f"{name}_scale")([x, s])


def _res_block(x, f: int, cfg: NetConfig, name: str):
    import keras

    L = keras.layers
    y = _cbr(x, f, cfg.kernel_size, f"{name}_cbr1")
    y = L.Conv1D(f, cfg.kernel_size, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    y = _se(y, f, cfg.se_ratio, f"{name}_se")
    short = x if x.shape[-1] == f else L.Conv1D(f, 1, name=f"{name}_proj")(x)
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([y, short]))


def _attention_gate(skip, g, f_int: int, name: str):
    import keras

    L = keras.layers
    theta = L.Conv1D(f_int, 1, name=f"{name}_wx")(skip)
    phi = L.Conv1D(f_int, 1, name=f"{name}_wg")(g)
    psi = L.ReLU(name=f"{name}_relu")(L.Add(name=f"{name}_add")([theta, phi]))
    psi = L.Conv1D(1, 1, activation="sigmoid", name=f"{name}_psi")(psi)
    return L.Multiply(name=f"{name}_gate")([skip, psi])


def build_unet(cfg: NetConfig, length: int):
    """The (uncompiled) network for windows of ``length`` samples."""
    import keras

    L = keras.layers
    if length % (2 ** cfg.depth):
        raise ValueError(f"window length {length} must be a multiple of 2^depth = "
                         f"{2 ** cfg.depth}")
    widths = [min(cfg.filters * 2 ** i, cfg.max_filters) for i in range(cfg.depth + 1)]
    x_in = keras.Input((length, 1), name="eap")
    x = x_in
    skips = []
    for i in range(cfg.depth):
        x = _res_block(x, widths[i], cfg, f"enc{i}")
        skips.append(x)
        x = _cbr(x, widths[i + 1], 3, f"down{i}", strides=2)
    x = _res_block(x, widths[-1], cfg, "bottleneck")
    h = L.GlobalAveragePooling1D(name="ap_pool")(x)
    h = L.Dense(cfg.head_units, activation="relu", name="ap_hidden")(h)
    params = L.Dense(N_AP_PARAMS, activation="sigmoid", name="ap_params")(h)
    for i in reversed(range(cfg.depth)):
        x = L.UpSampling1D(2, name=f"up{i}")(x)
        x = _cbr(x, widths[i], 3, f"upconv{i}")
        s = _attention_gate(skips[i], x, max(2, widths[i] // 2), f"att{i}")
        x = L.Concatenate(name=f"cat{i}")([x, s])
        x = _res_block(x, widths[i], cfg, f"dec{i}")
    med = L.Conv1D(1, 1, name="median")(x)
    if cfg.quantiles:
        lo = L.Conv1D(1, 1, activation="softplus", name="lower_offset")(x)
        hi = L.Conv1D(1, 1, activation="softplus", name="upper_offset")(x)
        iap = L.Concatenate(name="quantiles")([L.Subtract(name="q05")([med, lo]), med,
                                               L.Add(name="q95")([med, hi])])
    else:
        iap = med
    rep = L.RepeatVector(length, name="ap_params_t")(params)
    out = L.Concatenate(name="output")([iap, rep])
    return keras.Model(x_in, out, name=f"pia_unet_d{cfg.depth}_f{cfg.filters}")
