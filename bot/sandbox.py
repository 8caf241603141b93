"""The decoder's sandbox: what ffmpeg may do with a stranger's bytes, enforced by the kernel.

sera never runs ffmpeg directly. It runs this file as a program, which confines itself and then
replaces itself with ffmpeg (``execv``), so ffmpeg starts already confined and can undo none of it:

- resource limits: address space, CPU time, open files, and no file writes (``RLIMIT_FSIZE`` 0);
- where sera runs as root, the unprivileged user ``nobody``, with no supplementary groups;
- no new privileges: no set-uid program can raise them back;
- **Landlock** (Linux 5.13+, needs no root and no user namespace, so it works in containers): the
  file system shrinks to the system's programs and libraries and the ffmpeg binary, read-only. Every
  other file is shut: the token's credential, the database, the state folder, ``/proc`` (so no other
  process can be seen or read), ``/tmp``. Nothing can be written, created, removed or truncated
  anywhere. Its input is a ``memfd`` inherited by descriptor, which Landlock leaves open to it, and
  Landlock also refuses ``ptrace``-class access to every process outside its own domain, so two
  decodes at once cannot read each other's uploads through ``/proc/<pid>/fd``;
- **seccomp**: no ``socket`` (so no network and no UNIX socket), no ``ptrace``, no reading another
  process's memory; every call that names a process (``kill``, ``rt_sigqueueinfo``, ``prlimit64``, the
  ``sched_*`` family...) may name only itself; no namespaces, mounts, keyrings, BPF, ``perf_event_open``
  or ``io_uring``.

It fails closed: if any step cannot be taken it prints one ``sera-sandbox:`` line and exits with
``UNCONFINED_EXIT`` without running ffmpeg. It imports nothing but the standard library, since it runs
with ``python -I -S`` (no site-packages, no environment, nothing from the working folder).

Usage: ``python -I -S sandbox.py strict|lenient MEMORY_KIB CPU_SECONDS OPEN_FILES BINARY [ARGUMENT...]``
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct
import sys

UNCONFINED_EXIT = 126  # "found but cannot be run": the sandbox refused to start the program
PREFIX = "sera-sandbox: "
UNPRIVILEGED_USER = "nobody"  # whom the program runs as when sera runs as root

# What the program may read and run: the system's programs and libraries (and the loader's cache).
SYSTEM_TREES = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache",)

# Landlock (include/uapi/linux/landlock.h). The syscall numbers are the same on every architecture.
CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}  # REFER, TRUNCATE, IOCTL_DEV
FILE_RIGHTS = FS_EXECUTE | FS_READ_FILE  # rights a rule on a file (not a folder) may carry that we grant

# seccomp (include/uapi/linux/seccomp.h, filter.h, audit.h).
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_KILL_PROCESS, RET_EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
NR, ARCH, ARG0_LOW, ARG0_HIGH = 0, 4, 16, 20  # offsets in struct seccomp_data (little-endian)
X32_BIT = 0x40000000

# The calls the filter knows, by architecture: (audit arch, {name: number}). Each is refused with EPERM,
# but those that name a process by their first argument, which are allowed towards this process only.
# Unlisted architectures are refused (fail closed).
SYSCALLS = {
    "x86_64": (0xC000003E, dict(
        socket=41, socketpair=53, connect=42, accept=43, accept4=288, bind=49, listen=50, ptrace=101,
        process_vm_readv=310, process_vm_writev=311, kcmp=312, pidfd_open=434, pidfd_getfd=438,
        pidfd_send_signal=424, perf_event_open=298, bpf=321, userfaultfd=323, keyctl=250, add_key=248,
        request_key=249, mount=165, umount2=166, pivot_root=155, chroot=161, unshare=272, setns=308,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427, truncate=76, ftruncate=77,
        open_by_handle_at=304, name_to_handle_at=303, tkill=200, setpriority=141, getpriority=140, ioprio_set=251,
        ioprio_get=252, kill=62, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297, prlimit64=302, sched_setparam=142,
        sched_getparam=143, sched_setscheduler=144, sched_getscheduler=145, sched_rr_get_interval=148, sched_setaffinity=203,
        sched_getaffinity=204, sched_setattr=314, sched_getattr=315, migrate_pages=256, move_pages=279,
    )),  # fmt: skip
    "aarch64": (0xC00000B7, dict(
        socket=198, socketpair=199, connect=203, accept=202, accept4=242, bind=200, listen=201, ptrace=117,
        process_vm_readv=270, process_vm_writev=271, kcmp=272, pidfd_open=434, pidfd_getfd=438,
        pidfd_send_signal=424, perf_event_open=241, bpf=280, userfaultfd=282, keyctl=219, add_key=217,
        request_key=218, mount=40, umount2=39, pivot_root=41, chroot=51, unshare=97, setns=268,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427, truncate=45, ftruncate=46,
        open_by_handle_at=265, name_to_handle_at=264, tkill=130, setpriority=140, getpriority=141, ioprio_set=30,
        ioprio_get=31, kill=129, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, prlimit64=261, sched_setparam=118,
        sched_getparam=121, sched_setscheduler=119, sched_getscheduler=120, sched_rr_get_interval=127, sched_setaffinity=122,
        sched_getaffinity=123, sched_setattr=274, sched_getattr=275, migrate_pages=238, move_pages=239,
    )),  # fmt: skip
}
# Allowed when their first argument is this process: abort() raises SIGABRT at itself. Not 0, which means
# the whole process group to kill(), the bot included.
TOWARDS_SELF = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
# Allowed towards this process or 0, which means "myself" to these (the C library asks its own limits and
# CPU affinity): never another process's limits, scheduling or memory.
TOWARDS_SELF_OR_0 = ("prlimit64", "sched_setparam", "sched_getparam", "sched_setscheduler", "sched_getscheduler",
                     "sched_rr_get_interval", "sched_setaffinity", "sched_getaffinity", "sched_setattr", "sched_getattr",
                     "migrate_pages", "move_pages")  # fmt: skip


class Refused(Exception):
    """A confinement step the kernel or the platform would not take."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _call(name: str, result: int) -> int:
    if result < 0:
        raise Refused(f"{name}: {os.strerror(ctypes.get_errno())}")
    return result


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 where it offers none."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc.syscall(CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(int(version), 0)


def landlock(binary: str) -> None:
    """Shut the file system to all but reading and running the system's programs and ``binary``."""
    abi = landlock_abi()
    if abi < 1:
        raise Refused("Landlock is not available (Linux 5.13 or later with 'landlock' in its lsm= list is needed)")
    handled = FS_RIGHTS_BY_ABI[max(known for known in FS_RIGHTS_BY_ABI if known <= abi)]
    attr = struct.pack("=Q", handled)
    ruleset = _call("landlock_create_ruleset", _libc.syscall(CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)))
    try:
        rules = [(tree, FS_EXECUTE | FS_READ_FILE | FS_READ_DIR) for tree in SYSTEM_TREES]
        rules += [(path, FS_READ_FILE) for path in SYSTEM_FILES] + [(binary, FILE_RIGHTS)]
        for path, rights in rules:
            try:
                parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this system (/lib32, say)
            try:
                rule = struct.pack("=Qi", rights & handled, parent)
                _call(f"landlock_add_rule({path})", _libc.syscall(ADD_RULE, ruleset, RULE_PATH_BENEATH, rule, ctypes.c_uint32(0)))
            finally:
                os.close(parent)
        _call("landlock_restrict_self", _libc.syscall(RESTRICT_SELF, ruleset, ctypes.c_uint32(0)))
    finally:
        os.close(ruleset)


def seccomp_program(machine: str, pid: int) -> bytes:
    """The seccomp filter (classic BPF) for ``machine``: the wrong architecture kills, the refused calls
    get EPERM, the calls that name a process may name only ``pid`` (``TOWARDS_SELF``, ``TOWARDS_SELF_OR_0``),
    everything else is allowed."""
    if machine not in SYSCALLS:
        raise Refused(f"no seccomp filter for the {machine} architecture")
    arch, numbers = SYSCALLS[machine]
    guarded = {**dict.fromkeys(TOWARDS_SELF, "self"), **dict.fromkeys(TOWARDS_SELF_OR_0, "self or 0")}
    first_argument = [(LD_W_ABS, 0, 0, ARG0_HIGH), (JEQ_K, 0, "refuse", 0), (LD_W_ABS, 0, 0, ARG0_LOW)]  # a pid: 32 bits
    program: list[tuple[int, int | str, int | str, int] | str] = [
        (LD_W_ABS, 0, 0, ARCH), (JEQ_K, 1, 0, arch), (RET_K, 0, 0, RET_KILL_PROCESS), (LD_W_ABS, 0, 0, NR),
        *([(JGE_K, "refuse", 0, X32_BIT)] if machine == "x86_64" else []),  # the x32 ABI's numbers would slip past every test
        *((JEQ_K, guarded.get(name, "refuse"), 0, number) for name, number in numbers.items()),
        (RET_K, 0, 0, RET_ALLOW),
        "self or 0", *first_argument, (JEQ_K, "allow", 0, 0), (JEQ_K, "allow", "refuse", pid),
        "self", *first_argument, (JEQ_K, "allow", "refuse", pid),
        "refuse", (RET_K, 0, 0, RET_EPERM),
        "allow", (RET_K, 0, 0, RET_ALLOW),
    ]  # fmt: skip
    return assemble(program)


def assemble(program: list[tuple[int, int | str, int | str, int] | str]) -> bytes:
    """Classic BPF from instructions and the labels among them: a jump to a label becomes the count of
    instructions it skips, as the kernel reads it."""
    instructions = [step for step in program if not isinstance(step, str)]
    at, count = {}, 0
    for step in program:
        if isinstance(step, str):
            at[step] = count
        else:
            count += 1
    offset = lambda target, here: at[target] - here - 1 if isinstance(target, str) else target  # noqa: E731
    return b"".join(struct.pack("=HBBI", code, offset(jt, i), offset(jf, i), k) for i, (code, jt, jf, k) in enumerate(instructions))


def seccomp(program: bytes) -> None:
    filters = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
    _call("seccomp", _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0))


def drop_root() -> None:
    """As root, become ``nobody``; without the capability to (a container), stay: Landlock still holds."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        nobody = pwd.getpwnam(UNPRIVILEGED_USER)
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    except (KeyError, PermissionError):
        pass


def limit(memory_kib: int, cpu_seconds: int, open_files: int) -> None:
    """Lower (never raise) the resource limits. The CPU limit's soft and hard edges are one, so the kernel
    sends SIGKILL there (ffmpeg catches SIGXCPU and would exit like any failed decode)."""
    for which, soft, hard in (
        (resource.RLIMIT_AS, memory_kib * 1024, memory_kib * 1024),
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds),
        (resource.RLIMIT_NOFILE, open_files, open_files),
        (resource.RLIMIT_FSIZE, 0, 0),
    ):
        current_soft, current_hard = resource.getrlimit(which)
        cap = lambda value, current: value if current == resource.RLIM_INFINITY else min(value, current)  # noqa: E731
        resource.setrlimit(which, (cap(soft, current_hard), cap(hard, current_hard)))


def confine(binary: str, strict: bool) -> None:
    """No new privileges, Landlock, seccomp. ``strict``: any step refused stops everything; otherwise
    (the operator's opt-out, ``audio.confine_decoder: false``) what works is kept."""
    try:
        if not sys.platform.startswith("linux"):
            raise Refused("the decoder sandbox needs Linux (Landlock and seccomp)")
        _call("prctl(PR_SET_NO_NEW_PRIVS)", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        landlock(binary)
        seccomp(seccomp_program(platform.machine(), os.getpid()))
    except Refused:
        if strict:
            raise


def main(argv: list[str]) -> None:
    """Limits and the user change first (they need privileges the later steps take away), then confine, then exec."""
    mode, memory_kib, cpu_seconds, open_files, binary, *arguments = argv
    binary = os.path.realpath(binary)
    try:
        limit(int(memory_kib), int(cpu_seconds), int(open_files))
        drop_root()
        confine(binary, strict=mode != "lenient")
    except (Refused, OSError, ValueError) as exc:
        print(f"{PREFIX}{exc}", file=sys.stderr, flush=True)
        os._exit(UNCONFINED_EXIT)
    os.execv(binary, [binary, *arguments])


if __name__ == "__main__":
    main(sys.argv[1:])
