"""The one output rule of every command and of the Slicer Logic.

Before any work: an output may not be an input, lie inside a model bundle, a guide or a dataset, be
a folder, be another output, or (without ``--overwrite``) an existing file; its folder must be writable.
Writing: to a temporary beside the target, then one rename, so a killed or failed write leaves the file
that was there (or nothing), never half of one. Several outputs of one command are all written first,
then all renamed.
Operating-system errors become one line naming the path. No torch.
"""

import os
from pathlib import Path

from .errors import InputError

PARTIAL = ".partial-"  # temporaries are named ".partial-<pid>-<name>" (hidden, same suffix as the target)


def _resolved(path, flag):
    try:
        return Path(path).expanduser().resolve(strict=False)
    except RuntimeError:  # Python reports a symbolic link loop this way
        raise InputError(f"{flag} {path}: a symbolic link loop; give the file itself") from None
    except OSError as error:
        raise InputError(f"{flag} {path}: {error.strerror or error}") from None


def _same(a, b):
    try:
        return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(outputs, inputs=(), kept=(), overwrite=False):
    """Refuse unusable outputs before the work. ``outputs``: {flag: path or None}; ``inputs``: files or
    folders the command reads (an output inside an input folder is refused too); ``kept``: folders that
    must not change (bundles, guides); ``overwrite``: an existing file may be replaced (else refused: it may
    be the user's). Returns {flag: resolved Path} of the outputs given."""
    resolved = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        target = _resolved(path, flag)
        for other_flag, other in resolved.items():
            if _same(target, other):
                raise InputError(f"{flag} and {other_flag} are the same file ({path}): give each output its own file")
            if other in target.parents or target in other.parents:
                raise InputError(f"{flag} {path} and {other_flag} {other} are one inside the other: give each output "
                                 "its own place")
        _check_outside(target, flag, path, inputs, kept)
        if target.is_dir():
            raise InputError(f"{flag} {path} is a folder: give a file name")
        if not overwrite and (target.exists() or target.is_symlink()):
            raise InputError(f"{flag} {path} already exists and may be yours: choose a new file name, or give "
                             "--overwrite to replace it")
        _check_writable_folder(target.parent, flag, path)
        resolved[flag] = target
    return resolved


def check_new_folder(path, flag, what="a saved model", inputs=(), kept=()):
    """Refuse, before the work, a folder output that exists (``what`` is never replaced), lies inside an input
    folder (a dataset) or a folder that must stay as it is (a bundle, a guide: ``kept``), or cannot be made."""
    target = _resolved(path, flag)
    if target.exists() or target.is_symlink():
        raise InputError(f"{flag} {path} already exists: {what} is never replaced; choose a new folder")
    _check_outside(target, flag, path, inputs, kept)
    _check_writable_folder(target.parent, flag, path)
    return target


def _check_outside(target, flag, path, inputs, kept):
    """Refuse an output that is an input, lies inside an input folder, or inside a folder that must not change."""
    for source in (_resolved(p, "input") for p in inputs if p is not None):
        if _same(target, source) or source in target.parents:
            raise InputError(f"{flag} {path} is an input of this command ({source}), or inside it: writing there "
                             "would change it; choose a place outside it")
    for folder in (_resolved(p, "folder") for p in kept if p is not None):
        if _same(target, folder) or folder in target.parents:
            raise InputError(f"{flag} {path} is inside {folder}, which must stay as it is (a model bundle or a "
                             "guide): choose an output outside it")


def _check_writable_folder(folder, flag, path):
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise InputError(f"{flag} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write in {existing} (permission denied); choose another place")


def partial_path(path):
    """The temporary a write of ``path`` goes to first (same folder, same suffix, hidden)."""
    path = Path(path)
    return path.with_name(f"{PARTIAL}{os.getpid()}-{path.name}")


def write_all(writers):
    """Write several outputs, all or none: ``writers`` {path: write(temporary path)}; each goes to its
    temporary, then all are renamed onto their targets. A failure while renaming puts back what the
    earlier renames replaced (or removes what they made). What killed writes left in a target's folder
    (temporaries of processes that no longer run) is removed first. OSError -> InputError naming the path."""
    temporaries, backups, done = {}, {}, []
    try:
        for path, write in writers.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(path.parent)
            temporary = temporaries[path] = partial_path(path)
            _os_errors(path, write, temporary)
        try:
            for path, temporary in temporaries.items():
                if path.exists():
                    backups[path] = partial_path(path.with_name("replaced-" + path.name))
                    _os_errors(path, os.replace, path, backups[path])
                done.append(path)
                _os_errors(path, os.replace, temporary, path)
        except BaseException:
            for path in reversed(done):  # the earlier outputs as they were
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    path.unlink(missing_ok=True)
            raise
    finally:
        for temporary in (*temporaries.values(), *backups.values()):
            temporary.unlink(missing_ok=True)


def write_text(path, text):
    """``write_all`` for one text file."""
    write_all({path: lambda temporary: Path(temporary).write_text(text)})


def _os_errors(path, function, *args):
    try:
        return function(*args)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    except RuntimeError as error:  # SimpleITK's writers report a full disk or a bad folder this way
        raise InputError(f"cannot write {path}: {str(error).strip().splitlines()[-1]}") from None


def remove_stale_partials(folder):
    """Remove what killed writes left in ``folder``: temporaries of processes that no longer run."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(PARTIAL) and not _running(entry):
            _remove(entry)


def _running(entry):
    """Whether the process that writes the temporary ``entry`` may still be at it."""
    pid = entry.name[len(PARTIAL):].split("-", 1)[0]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    if os.name == "nt":  # no safe liveness probe there: a day-old temporary is stale
        import time

        return time.time() - entry.stat().st_mtime < 86400
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: leave it
    return True


def _remove(entry):
    import shutil

    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
