"""How work runs: Ray start-up and the job runtime env (:mod:`.ray_setup`), the one fan-out
loop every stage schedules Ray work with (:mod:`.fanout`), and versions of the code and its
libraries (:mod:`.versions`)."""

from .fanout import FanOut, FanOutError, WorkTimeoutError, run_tasks
from .ray_setup import init_ray, package_dir, ray_runtime_env, ray_session
from .versions import code_version, package_versions

__all__ = ["FanOut", "FanOutError", "WorkTimeoutError", "code_version", "init_ray",
           "package_dir", "package_versions", "ray_runtime_env", "ray_session", "run_tasks"]
