"""Reading the end of a file or a text without holding a big log in memory."""

from __future__ import annotations

import os
from pathlib import Path


def decode(data: bytes | str) -> str:
    """Text from bytes, never failing: invalid UTF-8 becomes U+FFFD."""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


def tail_text(text: str, max_chars: int) -> str:
    """The last `max_chars` of `text`, from a line start when it had to be cut."""
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if newline >= 0 else cut


def read_tail(path: str | os.PathLike, max_bytes: int) -> tuple[str, int]:
    """(text, size): the last `max_bytes` of a file, decoded, from a line start when cut.

    NUL bytes are dropped. Raises OSError (FileNotFoundError, IsADirectoryError, ...).
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        fh.seek(start)
        data = fh.read(max_bytes)
    text = decode(data.replace(b"\x00", b""))
    if start > 0:
        newline = text.find("\n")
        text = text[newline + 1 :] if newline >= 0 else text
    return text, size


def read_tail_noted(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """(text, note) for evidence: the file's tail, or None and why not (never raises)."""
    try:
        text, size = read_tail(path, max_bytes)
    except FileNotFoundError:
        return None, "absent"
    except IsADirectoryError:
        return None, "a directory"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or type(exc).__name__}"
    return text, (f"last {max_bytes} of {size} bytes" if size > max_bytes else "")


def read_head_and_tail(
    path: str | os.PathLike, head: int, tail: int, offset: int = 0
) -> str:
    """The text of a file from `offset`: all of it, or its first `head` and last `tail`
    bytes (joined by a newline) when it is longer. Raises OSError."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(offset)
        if size - offset <= head + tail:
            data = fh.read()
        else:
            data = fh.read(head) + b"\n"
            fh.seek(size - tail)
            data += fh.read()
    return decode(data)


# file systems on which POSIX locks between hosts are unsafe or absent (SQLite's FAQ);
# a lock held on another host cannot be seen from here either
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph", "glusterfs",
     "fuse.glusterfs", "fuse.sshfs", "fuse.ceph", "afs", "9p", "panfs", "wekafs"}
)  # fmt: skip


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the file system holding `path` (nfs4, ext4, tmpfs, ...), from the
    mount table; None when unknown (no /proc). The path need not exist: its nearest
    existing ancestor is used."""
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best, best_type = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as table:
            for line in table:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                mount = fields[4].replace("\\040", " ")
                fstype = line.split(" - ", 1)[1].split()[0]
                inside = str(target) == mount or str(target).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, best_type = mount, fstype
    except OSError:
        return None
    return best_type


def on_network_filesystem(path: str | os.PathLike) -> str | None:
    """The network file system type holding `path` (nfs4, lustre, gpfs, ...) or None."""
    fstype = filesystem_type(path)
    return fstype if fstype in NETWORK_FILESYSTEMS else None


def read_only_location(path: str | os.PathLike) -> bool:
    """True when new files cannot be made next to `path` (read-only media or mount, or no
    write permission on its directory)."""
    directory = Path(path).absolute().parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(directory, os.W_OK)


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not a regular file that can be read to its end (a FIFO would block, a
    device may never end), or None. Follows symlinks; names a symlink loop as such."""
    import errno
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop (too many levels of symbolic links)"
        if exc.errno == errno.ENOENT:
            return "no such file" + (" (a dangling symlink)" if os.path.islink(path) else "")
        return exc.strerror or str(exc)
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"not a regular file ({kind})" if kind != "not a regular file" else kind
