"""The system calls a sandbox may not make: a seccomp filter, as bubblewrap loads it.

The namespaces and limits of a sandbox already refuse most of what these
calls would do; the filter takes away the kernel surface that is left, where
local privilege escalations are found: new user namespaces (which give
capabilities over new mounts, raw sockets and the like), the kernel keyrings
(shared by every process of the host's session and of a user id), io_uring,
BPF, ptrace and the other calls a plugin has no use for. A refused call fails
with ``EPERM``; ``clone3`` fails with ``ENOSYS``, so that the C library falls
back to ``clone``, whose flags the filter can read.

The filter is a classic BPF program written out here (the format is the
kernel's ABI, ``struct sock_filter``), for x86-64 only: on another
architecture :func:`program` returns ``None`` and sandboxes run without it.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF instructions (linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
_LOAD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_ARCH_X86_64 = 0xC000003E  # AUDIT_ARCH_X86_64
_X32_BIT = 0x40000000  # the x32 ABI's calls, on x86-64: refused, as they have other numbers
_CLONE_NEWUSER = 0x10000000
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
_NR, _ARCH, _FIRST_ARGUMENT = 0, 4, 16

_CLONE, _CLONE3 = 56, 435
REFUSED_X86_64: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "personality": 135,
    "vhangup": 153,
    "pivot_root": 155,
    "chroot": 161,
    "acct": 163,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
"""The calls refused outright, by name, with their x86-64 numbers."""


def _instruction(code: int, jump_true: int, jump_false: int, value: int) -> bytes:
    return struct.pack("<HBBI", code, jump_true, jump_false, value)


def program() -> bytes | None:
    """The filter as ``bwrap --seccomp`` reads it, or ``None`` where it is not written."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    refused = sorted(REFUSED_X86_64.values())
    # Layout: arch check, the call's number, one test a refused call, clone's flags,
    # then the shared returns. Jumps count the instructions they skip.
    clone_flags = 7 + len(refused)  # after 6 instructions, a test each, and ALLOW
    deny = clone_flags + 3
    no_such_call = deny + 1
    code = [
        _instruction(_LOAD, 0, 0, _ARCH),
        _instruction(_JEQ, 0, deny - 2, _ARCH_X86_64),
        _instruction(_LOAD, 0, 0, _NR),
        _instruction(_JGE, deny - 4, 0, _X32_BIT),
        _instruction(_JEQ, no_such_call - 5, 0, _CLONE3),
        _instruction(_JEQ, clone_flags - 6, 0, _CLONE),
    ]
    for number in refused:
        code.append(_instruction(_JEQ, deny - len(code) - 1, 0, number))
    code.append(_instruction(_RETURN, 0, 0, _ALLOW))
    assert len(code) == clone_flags
    code += [
        _instruction(_LOAD, 0, 0, _FIRST_ARGUMENT),  # the low half of clone's flags
        _instruction(_JSET, deny - clone_flags - 2, 0, _CLONE_NEWUSER),
        _instruction(_RETURN, 0, 0, _ALLOW),
        _instruction(_RETURN, 0, 0, _ERRNO | errno.EPERM),
        _instruction(_RETURN, 0, 0, _ERRNO | errno.ENOSYS),
    ]
    return b"".join(code)
