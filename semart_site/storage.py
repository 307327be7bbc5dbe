"""File storage that never leaves a partial file under a real name.

Django's FileSystemStorage writes straight into the final path, so a full disk (ENOSPC), a quota or a killed
process leaves a truncated file there. This one writes a hidden temporary file in the same folder, flushes
it, and only then links it under its name (``os.link`` refuses an existing name, keeping Django's rule that
a save never overwrites another file); the temporary file is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import Any

from django.core.files.storage import FileSystemStorage

# Read once, at import: os.umask() can only be read by setting it, which is not safe once threads run.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class AtomicFileSystemStorage(FileSystemStorage):
    def _save(self, name: str, content: Any) -> str:
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                if hasattr(content, "seek") and getattr(content, "seekable", lambda: True)():
                    content.seek(0)
                for chunk in content.chunks():
                    handle.write(chunk if isinstance(chunk, bytes) else chunk.encode())
                handle.flush()
                os.fsync(handle.fileno())
            while True:
                try:
                    _link_new(temporary, full_path)
                    break
                except FileExistsError:
                    name = self.get_available_name(name)
                    full_path = self.path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        if self.file_permissions_mode is not None:
            os.chmod(full_path, self.file_permissions_mode)
        else:
            # mkstemp creates 0600; give the file what a plain open() would (0666 less the umask).
            os.chmod(full_path, 0o666 & ~_UMASK)
        return str(name).replace("\\", "/")


def _link_new(source: str, target: str) -> None:
    """``target`` becomes ``source``'s content; FileExistsError when the name is taken."""
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links on this filesystem: check, then rename (a narrow race Django's own storage has too).
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", target) from None
        os.rename(source, target)
