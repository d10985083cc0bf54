"""The one way Science Gateway runs an external command: argv, no shell, a timeout.

Every scheduler or tool call (``sbatch``, ``squeue``, ``scancel``, ...) goes through
:func:`run_command`, so no user-supplied string is ever parsed by a shell and a hanging command
can never hang the hub.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass


class CommandError(RuntimeError):
    """A command failed: it exited non-zero, timed out, or could not be started."""

    def __init__(self, argv, returncode, stdout="", stderr="", *, timed_out=False):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        if timed_out:
            what = "timed out"
        elif returncode is None:
            what = "could not be started"
        else:
            what = f"exited with {returncode}"
        super().__init__(f"{self.argv[0]} {what}: {stderr.strip()[-500:] or stdout.strip()[-500:]}")


@dataclass(frozen=True)
class CommandResult:
    argv: list
    returncode: int
    stdout: str
    stderr: str


async def run_command(
    argv, *, input: str | None = None, env: dict | None = None, timeout: float = 30, check: bool = True
) -> CommandResult:
    """Run ``argv`` (a list, no shell) and return its output.

    ``input`` is written to stdin. ``env`` replaces the environment when given. On timeout the
    process is killed. Raises :class:`CommandError` (exit code, argv, stdout, stderr) when the
    command cannot start, times out, or (with ``check``) exits non-zero.
    """
    argv = [os.fspath(a) for a in argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as e:
        raise CommandError(argv, None, "", str(e)) from e
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), timeout
        )
    except asyncio.TimeoutError:
        proc.kill()
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 5)
        except asyncio.TimeoutError:
            out, err = b"", b""
        raise CommandError(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), timed_out=True) from None
    except asyncio.CancelledError:
        proc.kill()
        raise
    result = CommandResult(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, result.stdout, result.stderr)
    return result
