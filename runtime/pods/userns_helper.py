"""Run by the agent as a fresh, single-threaded interpreter: a multithreaded process cannot
create a user namespace, and a fork of the agent is not single-threaded for long (gRPC's
fork handlers start threads in the child).

argv: the CLONE_* flags in decimal, then the infra command (absolute path first), if any.
Protocol on stdout/stdin, one line each: "u" once the namespaces exist (or "e<errno>"); the
agent writes the id maps, pins the namespaces and answers "g"; with an infra command this
process then forks it as pid 1 of the new PID namespace and reports "p<pid>" once it has
exec'd (or "e<errno>"). Stdlib only: it runs with -I -S.
"""

import ctypes
import os
import sys


def main() -> int:
    flags = int(sys.argv[1])
    infra = [os.fsencode(a) for a in sys.argv[2:]]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        report(f"e{ctypes.get_errno()}")
        return 1
    report("u")
    if sys.stdin.readline().strip() != "g":
        return 1
    if not infra:
        return 0
    # Until now this process has kept the host root's ids; the infra must run as the pod's
    # root, which the maps now make a host uid without privileges.
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    exec_failed, exec_report = os.pipe()
    pid = os.fork()
    if pid == 0:
        exec_infra(infra, exec_report)
    os.close(exec_report)
    failure = os.read(exec_failed, 16)
    if failure:
        os.waitpid(pid, 0)
        report(f"e{int(failure)}")
        return 1
    report(f"p{pid}")
    return 0


def exec_infra(argv: list[bytes], exec_report: int) -> None:
    try:
        # Its own session: a ^C to the agent's terminal must not end the pod.
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv(argv[0], argv)
    except OSError as exc:
        os.write(exec_report, str(exc.errno or 1).encode())
    finally:
        os._exit(127)


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
