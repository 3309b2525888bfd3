"""The twin of one cell: recording ingestion (this package's ``recording`` module) and the
example-recording generator (``example``).

Units: time ms, voltage mV, current pA/pF (pA before normalization), capacitance pF.
"""

from .recording import (
    APRecording,
    Channel,
    LeakFit,
    ProtocolMismatchError,
    Recording,
    RecordingError,
    check_protocol,
    convert_current,
    convert_voltage,
    read_abf,
    read_ap_abf,
    read_ap_csv,
    read_trace_csv,
    recording_from_arrays,
    resample,
    resample_signal,
    subtract_leak,
)

__all__ = [
    "APRecording", "Channel", "LeakFit", "ProtocolMismatchError", "Recording", "RecordingError",
    "check_protocol", "convert_current", "convert_voltage", "read_abf", "read_ap_abf",
    "read_ap_csv", "read_trace_csv", "recording_from_arrays", "resample", "resample_signal",
    "subtract_leak", "write_example_recording",
]


def __getattr__(name):  # the example generator imports the simulator: load it on first use
    if name == "write_example_recording":
        import importlib

        return importlib.import_module(f"{__name__}.example").write_example_recording
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
