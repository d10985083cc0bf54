"""What a notebook batch job runs: papermill on one task's notebook and parameters.

``python -m science_gateway.notebook_task NOTEBOOK OUTPUT PARAMS.json [--kernel NAME] [--transport ipc|tcp]``

The same as ``papermill NOTEBOOK OUTPUT -f PARAMS`` (the executed notebook saved after every
cell, the parameters read from a JSON file, never from the command line), with one difference:
the kernel talks to papermill over **IPC sockets** in a private folder of its own by default.
Over TCP, Jupyter picks each kernel's five ports by binding and closing them, and the kernel binds
them a moment later: with many tasks of a job array starting on one node at once another kernel
takes a port in between, the kernel dies ("Address already in use") and papermill waits for it
until the job's walltime. IPC socket paths are unique per task, so that cannot happen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile


def kernel_manager_class(socket_dir: str):
    """An ``AsyncKernelManager`` whose kernels listen on IPC sockets under ``socket_dir``."""
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(socket_dir, "kernel"))
            super().__init__(**kwargs)

    return IPCKernelManager


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m science_gateway.notebook_task", description=__doc__.split("\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("parameters", help="a JSON file: name -> value")
    parser.add_argument("--kernel", default="", help="the kernel to run (default: the one the notebook names)")
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    parser.add_argument("--start-timeout", type=int, default=120, help="seconds the kernel may take to start")
    args = parser.parse_args(argv)
    import papermill

    with open(args.parameters) as f:
        parameters = json.load(f)
    socket_dir = tempfile.mkdtemp(prefix="sg-kernel-")  # mode 0700, local to the node
    extra = {"kernel_manager_class": kernel_manager_class(socket_dir)} if args.transport == "ipc" else {}
    try:
        papermill.execute_notebook(
            args.notebook, args.output, parameters=parameters, kernel_name=args.kernel or None, progress_bar=False,
            request_save_on_cell_execute=True, start_timeout=args.start_timeout, **extra,
        )
    except papermill.PapermillExecutionError as e:
        print(f"the notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
