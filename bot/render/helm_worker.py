"""A Helm render worker: a long-lived child process that renders charts on request.

Run as a script (``python helm_worker.py``), not as part of the ``bot`` package, so it
starts by loading Helm's engine and nothing else. Requests and replies are
length-prefixed JSON on stdin and stdout. The parent bounds it (memory by rlimit,
CPU and wall clock by watching it) and kills its process group on overrun; a
template loop therefore dies with the worker, never inside the bot.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")


def read_message(stream: BinaryIO) -> Any:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    return json.loads(stream.read(size))


def write_message(stream: BinaryIO, message: Any) -> None:
    body = json.dumps(message).encode()
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _render(helm: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        helm.validate_release_name(request["release"])
    except helm.HelmError:
        return {"render_error": "invalid_release"}
    values = json.loads(request["values"])
    with helm.Chart.load(request["chart"]) as chart:
        vendored = {dep.get("name") for dep in chart.dependencies}
        missing = [name for name in request["declared"] if name not in vendored]
        if missing:
            return {"missing_dependency": missing[0]}
        crds = [[crd["filename"], crd["data"]] for crd in chart.crds]
        templates = chart.render(
            values, name=request["release"], namespace=request["namespace"], is_install=True
        )
    rendered = crds + sorted([name, text] for name, text in templates.items())
    if sum(len(text) for _, text in rendered) > request["max_output_bytes"]:
        return {"render_error": "output_too_large"}
    return {"rendered": rendered}


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main() -> None:
    # Die with the parent even if it is killed mid-render. (PR_SET_PDEATHSIG would fire
    # when the parent *thread* that started us exits, and render threads come and go.)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # Only replies go to the protocol stream: whatever else writes to fd 1 goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    import helm_python

    write_message(replies, {"ready": True})
    while True:
        request = read_message(requests)
        if request is None:
            return
        started = _cpu_s()
        try:
            reply = _render(helm_python, request)
        except helm_python.HelmError as exc:
            reply = {"helm_error": str(exc)}
        except (RecursionError, MemoryError) as exc:
            reply = {"render_error": type(exc).__name__}
        reply["cpu_s"] = _cpu_s() - started
        write_message(replies, reply)


if __name__ == "__main__":
    main()
