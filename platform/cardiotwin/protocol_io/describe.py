"""A one-page description of a protocol for the rig operator (Markdown): what to load, the
sample interval and temperature the acquisition must use, the segment table, and how to bring
the recording back."""

from __future__ import annotations

from ..protocols import Protocol


def describe_protocol(protocol: Protocol, *, name: str = "protocol",
                      waveform_file: str | None = None) -> str:
    """Markdown text: identity (hash), acquisition settings, the segments (start time, duration,
    command; ramps marked) and the steps back into cardiotwin."""
    dt = protocol.sample_interval_ms
    rate_khz = 1.0 / dt
    v = protocol.command_voltage()
    lines = [
        f"# Voltage-clamp protocol `{name}`",
        "",
        f"- protocol_hash: `{protocol.protocol_hash}`",
        f"- duration: {protocol.duration_ms:g} ms in {len(protocol.segments)} segments, "
        f"{protocol.n_samples} samples",
        f"- sample interval: {dt:g} ms ({rate_khz:g} kHz): set the acquisition to this rate, "
        "one sweep, no leak subtraction (P/N off)",
        f"- temperature: {protocol.temperature_K:g} K ({protocol.temperature_K - 273.15:.1f} "
        "degC): the twins assume it",
        f"- command range: {v.min():g} to {v.max():g} mV; holding between sweeps: the first "
        f"level, {protocol.segments[0].v_start_mV:g} mV",
    ]
    if waveform_file:
        lines += [f"- waveform file: `{waveform_file}` (Axon Text File; Clampex: Edit Protocol > "
                  "Waveform > Stimulus File; one sample per row, time in s, command in mV)"]
    lines += ["", "| # | start (ms) | duration (ms) | command (mV) |", "|---|---|---|---|"]
    t = 0.0
    for k, s in enumerate(protocol.segments):
        cmd = f"{s.v_start_mV:g}" if not s.is_ramp else \
            f"ramp {s.v_start_mV:g} to {s.v_end_mV:g}"
        lines.append(f"| {k} | {t:g} | {s.duration_ms:g} | {cmd} |")
        t += s.duration_ms
    lines += [
        "",
        "Ramps: samples follow v_start + (v_end - v_start) j / n for sample j of n; the end value "
        "is reached at the next segment's start.",
        "",
        "Back into cardiotwin: `cardiotwin protocol import RECORDING.abf --out P.json` "
        "(the recorded command waveform, merged into steps and ramps; its protocol_hash "
        "must equal the one above), then `cardiotwin twin RECORDING.abf --model DIR`.",
        "",
    ]
    return "\n".join(lines)
