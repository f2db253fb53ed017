"""Writing an export tree: staged next to the target, committed with rollback, with a manifest.

Design: every file is written (and fsynced) into a temporary folder beside the target first, so a
failure while writing (full disk, read-only filesystem, permissions) leaves the old tree as it was.
A target that does not exist yet is then one rename of the whole folder. Into an existing target
each file is renamed in (same filesystem: a rename needs no space), the file it replaces moved
aside first; if any rename fails, every move is undone. The target's other files are the user's:
only the files the previous export listed in its manifest, and no longer written, are removed,
and only while their content is still what that export wrote (a file you edited stays, and is
named in the result).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gpumix.planner.plan import file_mode, make_parents, remove_dirs

MANIFEST = ".gpumix-export.json"
MANIFEST_VERSION = 1
MANIFEST_MAX_BYTES = 4 << 20  # a manifest lists file names and hashes; anything larger is not ours


@dataclass(frozen=True)
class TreeResult:
    root: Path  # the folder written (a symlinked --out resolved)
    written: tuple[str, ...]  # relative paths, the manifest excluded
    removed: tuple[str, ...] = ()  # stale files of the previous export, removed
    kept: tuple[str, ...] = field(default=())  # stale files edited since, left in place


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe_rel(rel: object) -> str | None:
    """A manifest or export path that stays inside the tree (relative, no `..`), else None."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")) or rel == MANIFEST:
        return None
    return str(p)


def read_manifest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of the previous export into `root`; {} when there is none or it is
    not a manifest gpumix wrote (then nothing is treated as ours)."""
    path = root / MANIFEST
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MANIFEST_MAX_BYTES:
            return {}
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("schema_version") != MANIFEST_VERSION or \
            not isinstance(doc.get("files"), list):
        return {}
    out = {}
    for f in doc["files"]:
        if isinstance(f, dict) and _safe_rel(f.get("path")) and isinstance(f.get("sha256"), str):
            out[_safe_rel(f["path"])] = f["sha256"]
    return out


def manifest_text(files: dict[str, bytes]) -> str:
    return json.dumps({
        "schema_version": MANIFEST_VERSION,
        "generator": "gpumix export",
        "note": "files this export wrote; the next export into this folder removes those it no longer "
                "writes (unless edited since); other files are never touched",
        "files": [{"path": rel, "sha256": sha256(data), "bytes": len(data)} for rel, data in sorted(files.items())],
    }, indent=2) + "\n"


def _is_ours(root: Path, rel: str, digest: str) -> bool:
    """`rel` is a plain file inside `root` whose content is what the manifest says."""
    path = root / rel
    try:
        real = Path(os.path.realpath(path))
        if path.is_symlink() or not path.is_file() or root not in real.parents:
            return False
        return sha256(path.read_bytes()) == digest
    except OSError:
        return False


def _check_target(root: Path, rels) -> None:
    """Fail before writing anything when a path of the tree cannot be committed (a folder where a
    file goes, a file where a folder goes)."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
    for rel in rels:
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way", str(path))
        for parent in PurePosixPath(rel).parents:
            p = root / parent
            if str(parent) != "." and (p.exists() or p.is_symlink()) and not p.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(p))


def _write(path: Path, data: bytes, executable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, file_mode(executable))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_tree(target: Path | str, files: dict[str, str], executable=lambda rel: rel.endswith(".sh")) -> TreeResult:
    """Write {relative path: text} under `target` (docstring at the top of this module)."""
    root = Path(os.path.realpath(target))
    data = {}
    for rel, text in files.items():
        safe = _safe_rel(rel)
        if safe is None:
            raise ValueError(f"export path {rel!r} leaves the tree")  # a bug in a format, not bad input
        data[safe] = text.encode("utf-8")
    old = read_manifest(root) if root.is_dir() else {}
    stale = sorted(set(old) - set(data))
    _check_target(root, [*data, MANIFEST])
    made = make_parents(root.parent)
    try:
        stage = _stage_dir(root)
    except BaseException:
        remove_dirs(made)
        raise
    ok = False
    try:
        for rel, blob in sorted(data.items()):
            _write(stage / rel, blob, executable(rel))
        _write(stage / MANIFEST, manifest_text(data).encode("utf-8"), False)
        if not root.exists():
            _chmod_dirs(stage)
            os.rename(stage, root)
            ok = True
            return TreeResult(root, tuple(sorted(data)))
        removed = [rel for rel in stale if _is_ours(root, rel, old[rel])]
        kept = [rel for rel in stale if rel not in removed and (root / rel).exists()]
        _commit(stage, root, [*sorted(data), MANIFEST], removed)
        _prune_dirs(root, removed)
        ok = True
        return TreeResult(root, tuple(sorted(data)), tuple(removed), tuple(kept))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not ok:
            remove_dirs(made)


def _stage_dir(root: Path) -> Path:
    """The staging folder: beside the target; inside an existing target when its parent is not
    writable (`--out .` in a home folder); either way on the target's filesystem."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    except PermissionError:
        if not root.is_dir():
            raise
        return Path(tempfile.mkdtemp(prefix=".gpumix-export.", suffix=".tmp", dir=root))


def _chmod_dirs(stage: Path) -> None:
    """Folders as mkdir under the umask would make them (mkdtemp makes its own 0700)."""
    mode = file_mode(True)
    for d in [stage, *(p for p in stage.rglob("*") if p.is_dir())]:
        os.chmod(d, mode)


def _commit(stage: Path, root: Path, rels: list[str], removed: list[str]) -> None:
    """Rename each staged file into `root`, moving what it replaces (and each stale file) aside into
    the stage's `.old`; on any failure undo every move, newest first."""
    aside = stage / ".old"
    moves: list[tuple[Path, Path]] = []  # (from, to), in order
    made: list[Path] = []  # folders created in root

    def move(src: Path, dst: Path) -> None:
        os.replace(src, dst)
        moves.append((src, dst))

    try:
        for rel in rels:
            dst = root / rel
            for parent in reversed(PurePosixPath(rel).parents):
                p = root / parent
                if str(parent) != "." and not p.exists():
                    p.mkdir(mode=0o777)
                    made.append(p)
            if dst.exists() or dst.is_symlink():
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                move(dst, aside / rel)
            move(stage / rel, dst)
        for rel in removed:
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            move(root / rel, aside / rel)
    except BaseException:
        for src, dst in reversed(moves):
            try:
                os.replace(dst, src)
            except OSError:
                pass
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:
                pass
        raise


def _prune_dirs(root: Path, removed: list[str]) -> None:
    """Folders left empty by removing stale files go too (a folder with anything else stays)."""
    dirs = sorted({root / parent for rel in removed for parent in PurePosixPath(rel).parents if str(parent) != "."},
                  key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass
