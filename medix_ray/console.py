"""The console of the long-running commands (`train`, `evaluate`, `score`, `serve-rewards`).

By default a person sees a progress bar, one short line per step or phase, and the warnings they
should act on. Everything else goes to log files in the run folder, whose path is printed first:

    <run>/logs/driver.log    this process's log records at INFO and above (ours and the libraries')
    <run>/logs/serve/        Ray Serve's controller, proxy and replica logs (access logs only with --verbose)
    <run>/logs/ray           a link to the local Ray session's logs: raylet, workers (vLLM, DeepSpeed)

`--verbose` brings everything back to the console: worker output forwarded to the driver, Serve
access logs, INFO records of every library.

    console = Console(Path("runs/x/logs"), verbose=False).start()
    init_ray()                       # medix_ray/environment/ray_init.py: log_to_driver from ray_init_kwargs()
    serve.start(logging_config=console.serve_logging_config())
    console.line("step 1/15  reward 0.312 ...")

Library code asks `current()` for the active console; without one (tests, library use) it gets a
verbose console that changes nothing.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Loggers whose INFO records are noise on a person's console (they stay in driver.log).
LIBRARY_LOGGERS = (
    "ray",
    "ray.data",
    "ray.serve",
    "ray.train",
    "ray.tune",
    "deepspeed",
    "vllm",
    "transformers",
    "httpx",
    "urllib3",
    "filelock",
    "torch",
    "py.warnings",
)

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class Console:
    """Where the output of one command goes; `log_dir` None means no log files (console only)."""

    log_dir: Path | None = None
    verbose: bool = True

    def start(self) -> Console:
        """Routes logging: the console shows warnings (everything with `verbose`), `driver.log` keeps INFO and
        above; prints where the logs are. Returns self and makes it the `current()` console."""
        global _CURRENT
        root = logging.getLogger()
        user_level = root.level  # --log-level (basicConfig); driver.log gets at least INFO
        root.setLevel(min(user_level or logging.WARNING, logging.INFO))
        for handler in [h for h in root.handlers if getattr(h, "_medix_console", False)]:
            root.removeHandler(handler)  # a second start (a resumed run in the same process)
            handler.close()
        streams = [h for h in root.handlers if type(h) is logging.StreamHandler]
        if not streams:
            streams = [logging.StreamHandler(sys.stderr)]
            streams[0].setFormatter(logging.Formatter(_FORMAT))
            streams[0]._medix_console = True  # type: ignore[attr-defined]
            root.addHandler(streams[0])
        for handler in streams:  # verbose: INFO, or more if --log-level asks; else warnings only
            handler.setLevel(
                min(user_level or logging.INFO, logging.INFO) if self.verbose else max(user_level, logging.WARNING)
            )
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            file = logging.FileHandler(self.log_dir / "driver.log", encoding="utf-8")
            file.setFormatter(logging.Formatter(_FORMAT))
            file.setLevel(logging.INFO)
            file._medix_console = True  # type: ignore[attr-defined]
            root.addHandler(file)
            print(f"logs: {self.log_dir} (--verbose shows them on the console)", file=sys.stderr, flush=True)
        logging.captureWarnings(True)
        _CURRENT = self
        self.quiet_libraries()
        return self

    def quiet_libraries(self) -> None:
        """Lowers the libraries' own console handlers to WARNING (Ray Data installs its own at import); their
        records still reach driver.log through the root logger where they propagate."""
        if self.verbose:
            return
        for name in LIBRARY_LOGGERS:
            log = logging.getLogger(name)
            for handler in log.handlers:
                if type(handler) is not logging.FileHandler and isinstance(handler, logging.StreamHandler):
                    handler.setLevel(logging.WARNING)
        try:  # Ray Data's per-operator progress bars and its "Executing DAG" banners
            from ray.data import DataContext

            ctx = DataContext.get_current()
            ctx.enable_operator_progress_bars = False
            ctx.print_on_execution_start = False
        except (ImportError, AttributeError):  # Ray Data not installed, or a context without these fields
            pass

    def ray_init_kwargs(self) -> dict[str, Any]:
        """Returns ray.init's console arguments: worker output reaches the driver only with `verbose`."""
        return {"log_to_driver": self.verbose}

    def serve_logging_config(self) -> Any:
        """Returns Serve's LoggingConfig: logs in `<log_dir>/serve`, access logs only with `verbose`."""
        from ray.serve.schema import LoggingConfig

        kwargs: dict[str, Any] = {"enable_access_log": self.verbose}
        if self.log_dir is not None:
            kwargs["logs_dir"] = str((self.log_dir / "serve").absolute())
        return LoggingConfig(**kwargs)

    def link_ray_logs(self) -> None:
        """Links the local Ray session's log folder into `<log_dir>/ray` (workers, raylet, vLLM, DeepSpeed)."""
        if self.log_dir is None:
            return
        try:
            import ray

            session_logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # noqa: SLF001
        except AttributeError:  # no local node (a remote cluster through Ray Client): its logs are on its nodes
            return
        link = self.log_dir / "ray"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(session_logs, target_is_directory=True)

    def line(self, text: str) -> None:
        """Prints one line for a person (above a tqdm bar if one is showing)."""
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    def where(self) -> str:
        """Returns the sentence that names the logs, for error messages."""
        return f"see the logs in {self.log_dir}" if self.log_dir is not None else "see the log above"


_CURRENT: Console | None = None


def current() -> Console:
    """Returns the console the entry point started, or a verbose one that changes nothing."""
    return _CURRENT if _CURRENT is not None else Console()
