"""Stand-in commands for tests and benchmarks: real executables that log each call.

A :class:`FakeCommand` is a small bash script in a folder of its own. Each call appends one line
``<epoch seconds> <name> <unix user> <arguments...>`` to a log (several commands may share one), and
with ``env_names=True`` the names (never the values) of its environment, one call a line, to
``<name>.env``; then it either runs
the real command (``real=``, a wrapper) or prints the file ``<name>.out`` (a stand-in whose answer
the test sets). ``set(mode="fail")`` makes the next calls exit 1 with a Slurm-like message on
stderr, ``set(mode="hang")`` makes them sleep until killed: how tests inject scheduler trouble.
The folder and log are world-readable/-writable so calls through ``sudo -u USER`` are logged too.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from pathlib import Path

SCRIPT = """#!/bin/bash
# {name} for tests (sgtest.commands.FakeCommand): logs each call; {mode} = ok | fail | hang
echo "$(date +%s.%N) {name} $(id -un) $*" >> {log}
{env}case "$(cat {mode} 2>/dev/null)" in
  fail) echo "{name}: slurm_load_jobs error: Unable to contact slurm controller (injected)" >&2; exit 1 ;;
  hang) exec sleep 3600 ;;
esac
{run}
"""


class FakeCommand:
    """An executable ``directory/name`` that logs each call, then runs ``real`` or prints its out file."""

    def __init__(self, directory: Path, name: str, *, real: str | None = None, log: Path | None = None,
                 out: str = "", env_names: bool = False):
        self.dir = Path(directory)
        self.name = name
        self.path = str(self.dir / name)
        self.log = Path(log) if log else self.dir / f"{name}.calls"
        self.mode_file = self.dir / f"{name}.mode"
        self.out_file = self.dir / f"{name}.out"
        self.env_file = self.dir / f"{name}.env"
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        if not self.log.exists():
            self.log.touch()
            os.chmod(self.log, 0o666)
        run = f'exec {shlex.quote(real)} "$@"' if real else f"exec cat {shlex.quote(str(self.out_file))}"
        env = ""
        if env_names:
            self.env_file.touch()
            os.chmod(self.env_file, 0o666)
            target = shlex.quote(str(self.env_file))
            env = (f"{{ env -0 | tr '\\0\\n' '\\n ' | cut -d= -f1 | sort | tr '\\n' ' '; echo; }} >> {target}\n")
        Path(self.path).write_text(SCRIPT.format(
            name=name, log=shlex.quote(str(self.log)), mode=shlex.quote(str(self.mode_file)), run=run, env=env,
        ))
        os.chmod(self.path, 0o755)
        self.set(mode="ok", out=None if real else out)

    def set(self, mode: str | None = None, out: str | None = None) -> None:
        """``mode``: ok | fail | hang; ``out``: what a stand-in (no ``real``) prints from now on."""
        if mode is not None:
            if mode not in ("ok", "fail", "hang"):
                raise ValueError(f"mode must be ok, fail or hang, not {mode!r}")
            self.mode_file.write_text(mode)
        if out is not None:
            self.out_file.write_text(out)

    def calls(self) -> int:
        """How many times this command ran (its own lines in a shared log)."""
        return count_calls(self.log)[self.name]

    def lines(self) -> list[list[str]]:
        """Each call of this command as ``[unix user, argument, ...]`` (split on white space)."""
        return [line.split()[2:] for line in Path(self.log).read_text().splitlines()
                if len(line.split()) > 2 and line.split()[1] == self.name]

    def env_names(self) -> list[set[str]]:
        """For each call (with ``env_names=True``): the names in its environment."""
        return [set(line.split()) for line in self.env_file.read_text().splitlines()]


def count_calls(log: Path) -> Counter:
    """Calls per command name in a log that FakeCommands write."""
    return Counter(line.split()[1] for line in Path(log).read_text().splitlines() if len(line.split()) > 1)
