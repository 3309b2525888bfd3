"""Protocols to and from the rig: Axon Text File stimulus waveforms (``atf``), the command
waveform of a recording turned back into a canonical protocol (``importer``), a one-page
description for the rig operator (``describe``) and ``cardiotwin protocol export|import``
(``cli_args``)."""

from .atf import read_atf_waveform, write_atf
from .describe import describe_protocol
from .importer import import_command, import_recording, segments_from_samples

__all__ = ["describe_protocol", "import_command", "import_recording", "read_atf_waveform",
           "segments_from_samples", "write_atf"]
