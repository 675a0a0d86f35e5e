"""A poll's payload, as the watcher gets it: decompressed (gzip, zstd) within a bound, or the state file
itself, read on this machine (the local transport's ``handoff``) and mapped rather than copied.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import zlib

from watcher.errors import BadPollOutput
from watcher.transport import base
from watcher.transport.base import CHUNK, MAX_ANSWER_BYTES


def read_local_state(path: str, limit: int | None = None) -> bytes | bytearray | memoryview:
    """The state file itself, on this machine (the ``handoff`` answer of the local transport).

    A plain file is mapped rather than read: the parser works on the page cache directly, without a 76 MB
    copy. pueue replaces the file by rename, so the mapped inode never changes under us. The pages are not
    populated up front: the parser touches them a few MB at a time and hands them back as it goes
    (watcher/pueue/parse.py ``_decode_mapped``), so that the whole file is never resident at once.

    Only a regular file is read, never through a symbolic link (O_NOFOLLOW), and the open itself cannot block
    (O_NONBLOCK: a FIFO would otherwise hold a worker thread until a writer comes). A ``.gz`` file
    decompresses to at most ``limit`` bytes (default MAX_ANSWER_BYTES), as a remote payload does."""
    limit = base.MAX_ANSWER_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise BadPollOutput(f"cannot read {path}: {why}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadPollOutput(f"cannot read {path}: not a regular file")
        if info.st_size == 0:
            return b""
        mapped = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError as exc:
        raise BadPollOutput(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)  # a mapping keeps its own reference to the file
    if path.endswith(".gz"):
        with mapped, memoryview(mapped) as view:
            return decompress(view, "gzip", limit)
    return memoryview(mapped)


def release(payload: bytes | bytearray | memoryview) -> None:
    """Unmap a mapped state file now rather than whenever the garbage collector gets to it."""
    if isinstance(payload, memoryview):
        owner = payload.obj
        payload.release()
        if isinstance(owner, mmap.mmap):
            owner.close()


def decompress(
    data: memoryview, encoding: str, limit: int = MAX_ANSWER_BYTES
) -> bytes | bytearray | memoryview:
    """The payload, decompressed; more than ``limit`` bytes of output (a compression bomb) is refused."""
    try:
        if encoding == "gzip":
            inflater = zlib.decompressobj(wbits=31)
            out: bytes | bytearray = inflater.decompress(data, limit + 1)
        elif encoding == "zstd":
            import zstandard  # only hosts configured for zstd need it

            # Read in chunks: the frame's content size is unknown (zstd -c from a pipe), and a bomb must be
            # stopped after `limit` bytes, not buffered whole.
            out = bytearray()
            with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
                while len(out) <= limit and (chunk := reader.read(CHUNK)):
                    out += chunk
        elif encoding == "none":
            return data
        else:
            raise BadPollOutput(f"unknown payload encoding {encoding!r}")
    except BadPollOutput:
        raise
    except Exception as exc:
        raise BadPollOutput(f"cannot decompress the {encoding} payload: {exc}") from None
    if len(out) > limit:
        raise BadPollOutput(f"the {encoding} payload decompresses to more than {base.size_text(limit)}")
    return out
