"""Remote supervisor: runs on the SSH host, owns one QEMU, dies with the session.

Shipped as source text to the host (`python3 -c`), so it must stay stdlib-only
and must not import harness. Protocol (one SSH exec channel):

- controller -> stdin: one JSON line {"argv", "cwd", "env", "stdout"}; later
  lines {"signal": N, "group": bool}.
- supervisor -> stdout: JSON lines, in order: {"pid": N}, {"err": text}* (the
  child's stderr, latin-1), {"exit": rc, "core_dumped": bool}. One ordered
  stream, so stderr is complete before the exit is reported.

The watchdog: stdin reaching EOF means the SSH session is gone (controller
killed, link cut, channel closed); the supervisor then SIGKILLs the child's
process group, waits for it and removes its run dir (cwd, a qmh-* dir). The
child also gets PR_SET_PDEATHSIG, so a killed supervisor takes QEMU with it.

Guard mode (first line {"guard": true}): the host side of fault cleanup. The
controller records how to undo each fault *before* applying it,
{"record": KEY, "undo": [ARGV, ...]}, and drops the record once it undid the
fault itself, {"forget": KEY}; each is acknowledged with {"ok": KEY}. At EOF
(the controller's connection dropped) every record still held is undone, newest
first, each command bounded: an iptables chain, a downed link or a qdisc never
outlives the controller that made it.
"""
import json
import os
import resource
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def _emit(obj):
    os.write(1, (json.dumps(obj) + "\n").encode())


def _child(spec, w_err):
    try:
        os.setsid()
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
        os.chdir(spec["cwd"])
        null = os.open("/dev/null", os.O_RDONLY)
        out = os.open(spec["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(w_err, 2)
        env = dict(os.environ)
        env.update(spec["env"])
        os.execvpe(spec["argv"][0], spec["argv"], env)
    except BaseException as exc:  # noqa: BLE001 - report why exec failed, then 127
        os.write(2, f"supervisor: cannot start {spec['argv'][0]}: {exc}\n".encode())
    os._exit(127)


def _returncode(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def guard():
    """Hold undo commands; run the ones still held when the session drops."""
    import subprocess
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # sshd closing the session must not stop us
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    held = {}
    for line in sys.stdin.buffer:
        req = json.loads(line)
        key = req.get("record", req.get("forget"))
        if "record" in req:
            held.pop(key, None)
            held[key] = req["undo"]          # newest last
        else:
            held.pop(key, None)
        try:
            _emit({"ok": key})
        except OSError:
            break
    for key in reversed(list(held)):
        for argv in held[key]:
            try:
                subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=15)
            except (OSError, subprocess.SubprocessError):
                pass


def _remove_run_dir(cwd):
    """The session is gone, so is anyone who would read this run dir: remove it."""
    import shutil
    if os.path.basename(os.path.normpath(cwd)).startswith("qmh-"):
        shutil.rmtree(cwd, ignore_errors=True)


def main():
    spec = json.loads(sys.stdin.buffer.readline())
    if spec.get("guard"):
        guard()
        return
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r_err)
        _child(spec, w_err)
    os.close(w_err)
    _emit({"pid": pid})
    stdin_open, err_open, status, drain_until = True, True, None, None
    buf = b""
    while True:
        fds = ([0] if stdin_open else []) + ([r_err] if err_open else [])
        ready = select.select(fds, [], [], 0.05)[0] if fds else []
        if r_err in ready:
            data = os.read(r_err, 65536)
            if data:
                _emit({"err": data.decode("latin-1")})
            else:
                err_open = False
        if 0 in ready:
            chunk = os.read(0, 4096)
            if not chunk:
                # Session gone: nobody will ever shut this QEMU down. Kill it.
                stdin_open = False
                if status is None:
                    # The child itself too: right after the fork it may not have
                    # called setsid() yet, and then there is no group to kill.
                    for kill in (os.killpg, os.kill):
                        try:
                            kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    os.waitpid(pid, 0)
                _remove_run_dir(spec["cwd"])
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if status is None:  # not reaped yet: the pid cannot have been reused
                    try:
                        (os.killpg if req.get("group") else os.kill)(pid, req["signal"])
                    except ProcessLookupError:
                        pass
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                # Helpers QEMU spawned (exec: migration) may hold stderr open: drain briefly.
                drain_until = time.monotonic() + 1.0
        if status is not None and (not err_open or time.monotonic() > drain_until):
            _emit({"exit": _returncode(status), "core_dumped": bool(os.WCOREDUMP(status))})
            return


if __name__ == "__main__":
    main()
