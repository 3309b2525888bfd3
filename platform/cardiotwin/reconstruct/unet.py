"""1-D attention residual U-Net: normalized eAP window (length, 1) -> normalized iAP.

Encoder: per level a residual block of two CBR units (Conv1D - BatchNorm - ReLU) with
squeeze-and-excitation (channel attention), then a strided convolution (stride 2) halves the
length. Decoder: upsample x2, CBR, an additive attention gate weights the encoder skip
(Oktay et al. style: sigmoid(psi(relu(W_x skip + W_g g)))), concatenate, residual block.

Output (one tensor, so standard ``fit`` and losses apply): (length, n_q + 3) where channels
0 .. n_q-1 are the iAP quantiles in increasing order (n_q = 1: the median only; with central
``bands`` (0.9, 0.5): 0.05, 0.25, 0.5, 0.75, 0.95, built outwards from the median by adding
softplus offsets, so they never cross), and the last 3 channels are the
Aliev-Panfilov parameters (a, k, x) on the unit interval (sigmoid; :class:`PhysicsConfig`
maps them to their ranges) from a small head on the bottleneck, repeated along time.
Only built-in Keras layers: the saved model loads without custom objects.
"""

from __future__ import annotations

from pydantic import Field, field_validator

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
    quantiles: bool = Field(True, description="predict the quantiles of ``bands`` (else the "
                                              "median only)")
    bands: tuple[float, ...] = Field((0.9, 0.5), description="nominal coverages of the central "
                                     "bands (0.9: quantiles 0.05 and 0.95)")

    @field_validator("bands")
    @classmethod
    def _bands(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        v = tuple(sorted({round(float(c), 6) for c in v}, reverse=True))
        if not v or not all(0.0 < c < 1.0 for c in v):
            raise ValueError(f"expected one or more coverages in (0, 1), found {v}")
        return v

    @property
    def n_quantiles(self) -> int:
        return len(self.quantile_levels)

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        if not self.quantiles:
            return (0.5,)
        lows = [round((1.0 - c) / 2.0, 6) for c in self.bands]       # outermost first
        return tuple(lows) + (0.5,) + tuple(round(1.0 - q, 6) for q in reversed(lows))


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
        lows: list = []
        highs: list = []
        lo = hi = med
        for c in sorted(cfg.bands):                                    # innermost first
            tag = "" if len(cfg.bands) == 1 else f"_{round(c * 100):02d}"
            q = round((1.0 - c) / 2.0 * 100)
            d_lo = L.Conv1D(1, 1, activation="softplus", name=f"lower_offset{tag}")(x)
            d_hi = L.Conv1D(1, 1, activation="softplus", name=f"upper_offset{tag}")(x)
            lo = L.Subtract(name=f"q{q:02d}")([lo, d_lo])
            hi = L.Add(name=f"q{100 - q:02d}")([hi, d_hi])
            lows.insert(0, lo)
            highs.append(hi)
        iap = L.Concatenate(name="quantiles")(lows + [med] + highs)
    else:
        iap = med
    rep = L.RepeatVector(length, name="ap_params_t")(params)
    out = L.Concatenate(name="output")([iap, rep])
    return keras.Model(x_in, out, name=f"pia_unet_d{cfg.depth}_f{cfg.filters}")
