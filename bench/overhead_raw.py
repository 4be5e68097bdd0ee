"""The same cycle as the harness, written as a minimal raw qemu.qmp script.

Boot source and paused destination, precopy over TCP, byte-exact RAM compare,
continue the destination, wait for a pass, stop it, check the page rule, quit.
This is the baseline bench/overhead compares the harness against.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time

from qemu.qmp import QMPClient

PAGE = 4096


async def _serial_reader(sock_path: str, buf: bytearray, ready: asyncio.Event):
    for _ in range(200):
        try:
            reader, _w = await asyncio.open_unix_connection(sock_path)
            break
        except OSError:
            await asyncio.sleep(0.01)
    ready.set()
    while True:
        data = await reader.read(65536)
        if not data:
            return
        buf += data


async def _wait_b(buf: bytearray, start: int, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while b"B" not in buf[start:]:
        if time.monotonic() > deadline:
            raise TimeoutError("no B")
        await asyncio.sleep(0.01)


def _argv(binary, d, image, mem, extra):
    return [binary, "-nodefaults", "-display", "none", "-accel", "tcg", "-machine", "q35",
            "-m", str(mem), "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off",
            "-chardev", f"socket,id=s0,path={d}/serial.sock,server=on,wait=off",
            "-serial", "chardev:s0", "-drive", f"if=none,id=d0,file={image},format=raw,snapshot=on",
            "-device", "ide-hd,drive=d0,secs=1,cyls=1,heads=1", *extra]


async def _connect(path: str) -> QMPClient:
    q = QMPClient()
    for _ in range(500):
        try:
            await q.connect(path)
            return q
        except Exception:  # noqa: BLE001 - socket not there yet
            await asyncio.sleep(0.01)
    raise TimeoutError(path)


async def cycle(binary: str, image: str, mem: int = 128) -> float:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="raw-") as d:
        sd, dd = f"{d}/s", f"{d}/d"
        os.mkdir(sd)
        os.mkdir(dd)
        src = subprocess.Popen(_argv(binary, sd, image, mem, []), stderr=subprocess.DEVNULL)
        dst = subprocess.Popen(_argv(binary, dd, image, mem, ["-S", "-incoming", "defer"]),
                               stderr=subprocess.DEVNULL)
        try:
            qs, qd = await _connect(f"{sd}/qmp.sock"), await _connect(f"{dd}/qmp.sock")
            sbuf, dbuf = bytearray(), bytearray()
            r1, r2 = asyncio.Event(), asyncio.Event()
            t1 = asyncio.create_task(_serial_reader(f"{sd}/serial.sock", sbuf, r1))
            t2 = asyncio.create_task(_serial_reader(f"{dd}/serial.sock", dbuf, r2))
            await r1.wait()
            await r2.wait()
            await _wait_b(sbuf, 0)
            await qd.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
            port = (await qd.execute("query-migrate"))["socket-address"][0]["port"]
            await qs.execute("migrate-set-parameters", {"max-bandwidth": 1_000_000_000,
                                                        "downtime-limit": 30_000})
            await qs.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
            while (await qs.execute("query-migrate"))["status"] != "completed":
                await asyncio.sleep(0.01)
            while (await qd.execute("query-status"))["status"] not in ("paused", "prelaunch"):
                await asyncio.sleep(0.01)
            dumps = []
            for q, name in ((qs, "src"), (qd, "dst")):
                path = f"{d}/{name}.bin"
                await q.execute("pmemsave", {"val": 0, "size": mem << 20, "filename": path})
                with open(path, "rb") as f:
                    dumps.append(f.read())
                os.unlink(path)
            assert dumps[0] == dumps[1], "RAM differs"
            mark = len(dbuf)
            await qd.execute("cont")
            await _wait_b(dbuf, mark)
            await qd.execute("stop")
            path = f"{d}/pattern.bin"
            await qd.execute("pmemsave", {"val": 1 << 20, "size": 99 << 20, "filename": path})
            with open(path, "rb") as f:
                firsts = f.read()[::PAGE]
            os.unlink(path)
            assert len(set(firsts)) <= 2, "pattern broken"
            for q in (qs, qd):
                try:
                    await q.execute("quit")
                except Exception:  # noqa: BLE001 - EOF after quit
                    pass
                try:
                    await q.disconnect()
                except Exception:  # noqa: BLE001
                    pass
            t1.cancel()
            t2.cancel()
            src.wait(10)
            dst.wait(10)
        finally:
            for p in (src, dst):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    return time.monotonic() - t0


def run_cycle(binary: str, image: str, mem: int = 128) -> float:
    return asyncio.run(cycle(binary, image, mem))
