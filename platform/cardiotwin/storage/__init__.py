"""The storage layer every stage writes through: atomic files and directories
(:mod:`.atomic`), canonical JSON and identity hashes (:mod:`.identity`), claiming an output
directory (:mod:`.outdir`) and the single-writer lock (:mod:`.lock`)."""

from .atomic import (
    atomic_path,
    fsync_dir,
    recover_directory,
    replace_directory,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .identity import canonical_json, identity_hash, sha256_bytes, sha256_file
from .lock import DirectoryLock, LockHeldError
from .outdir import check_writable, claim_output_dir, config_diff, read_json_file

__all__ = ["DirectoryLock", "LockHeldError", "atomic_path", "canonical_json",
           "check_writable", "claim_output_dir", "config_diff", "fsync_dir", "identity_hash",
           "read_json_file", "recover_directory", "replace_directory", "sha256_bytes",
           "sha256_file", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
