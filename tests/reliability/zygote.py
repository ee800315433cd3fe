"""Starts engine processes quickly: ``python -m tests.reliability.zygote``.

Importing serversync with SQLAlchemy, asyncpg and the mail libraries takes over a second,
which a trial with several restarts would pay each time. The zygote imports them once and
forks a fresh engine process per request; each child is a separate process with its own
event loop, connections and pid, which the harness kills with a real SIGKILL.

Protocol (JSON lines on stdin and stdout; the zygote is single-threaded, as fork wants):

* ``{"op": "spawn", "config": {...}}`` → ``{"pid": N}``: fork a child running
  :func:`~tests.reliability.engine_process.run_engine`;
* ``{"op": "poll", "pid": N}`` → ``{"pid": N, "code": C}``: reap the child if it ended;
  ``C`` is its exit code (``-9`` after SIGKILL) or ``null`` while it runs.

:class:`Zygote` is the harness's side.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from types import TracebackType
from typing import Any, Self

from tests.reliability.engine_process import EngineConfig, run_engine

__all__ = ["Zygote"]

# Importing serversync takes a second or two; a busy machine may take longer.
_ANSWER_SECONDS = 60
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spawn(config: dict[str, Any]) -> int:
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        # The child must not read or write the zygote's protocol pipes.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        code = run_engine(EngineConfig(**config))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)
    return 0  # not reached


def _poll(pid: int) -> int | None:
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done == pid else None


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            answer: dict[str, Any] = {"pid": _spawn(request["config"])}
        else:
            pid = int(request["pid"])
            answer = {"pid": pid, "code": _poll(pid)}
        print(json.dumps(answer), flush=True)


class Zygote:
    """The harness's handle on a zygote process; use as an async context manager."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.reliability.zygote",
            cwd=_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        ready = await self._read()
        assert ready == {"ready": True}, ready
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _read(self) -> dict[str, Any]:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        async with asyncio.timeout(_ANSWER_SECONDS):
            line = await process.stdout.readline()
        if not line:
            raise RuntimeError("the zygote exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        assert process is not None
        assert process.stdin is not None
        async with self._lock:
            process.stdin.write((json.dumps(request) + "\n").encode())
            await process.stdin.drain()
            return await self._read()

    async def spawn(self, config: EngineConfig) -> int:
        """Start an engine process; its pid."""
        answer = await self._ask({"op": "spawn", "config": config.to_json()})
        return int(answer["pid"])

    async def poll(self, pid: int) -> int | None:
        """The exit code of ``pid`` once it ended (it is then reaped), else ``None``."""
        answer = await self._ask({"op": "poll", "pid": pid})
        code = answer["code"]
        return None if code is None else int(code)


if __name__ == "__main__":
    main()
