"""Recording a command's result in a package: the report file, the manifest's hashes and summary, the save.

Every command that adds to a built package (`verify`, `rtl`, `overlay`, `synth`, `serving-policy`) records
through `record_report`, so each leaves the package in the same state: its files hashed, stale entries gone,
the manifest saved once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from lepton_host.manifest import Manifest, unlisted_files


def write_json(path: str | os.PathLike, body) -> Path:
    """Write `body` as indented JSON, atomically (a reader sees the old file or the new one, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def record_report(
    root: str | os.PathLike,
    manifest: Manifest,
    name: str | None,
    summary: dict | None,
    *,
    report_file: str | os.PathLike | None = None,
    report=None,
    files: Iterable[str | os.PathLike] = (),
    replace_prefix: str | None = None,
) -> None:
    """Record a result in the package at `root` and save `manifest`.

    `report_file` (relative to `root`): `report` (default: `summary`) is written there as JSON and hashed.
    `replace_prefix` (a folder, "rtl/"): the manifest's entries under it are dropped first, since a rerun
    replaces that folder's files; a dropped file that the board loads (manifest.LOADED) and that is not among
    the new `files` is deleted, because unlisted it would make the package refused. `files`: paths inside the
    package as the caller reaches them (built from `root`, or absolute), hashed into the manifest. With `name`,
    `summary` becomes `manifest.reports[name]` (through Manifest.set_report, which checks the sections the
    board reads)."""
    root = Path(root)
    # Package-relative, whether `root` is absolute or relative to the working directory.
    base = os.path.abspath(root)
    paths = [Path(os.path.relpath(os.path.abspath(f), base)) for f in files]
    outside = [p for p in paths if p.parts[:1] == ("..",)]
    if outside:
        raise ValueError(f"{outside[0]} is not inside the package {root}")
    if name is not None:  # before any change: a summary the manifest refuses leaves the package untouched
        manifest.set_report(name, summary)
    stale: set[str] = set()
    if replace_prefix is not None:
        prefix = replace_prefix.rstrip("/") + "/"
        stale = {rel for rel in manifest.artifacts if rel.startswith(prefix)}
        for rel in stale:
            del manifest.artifacts[rel]
    if report_file is not None:
        write_json(root / report_file, summary if report is None else report)
        paths.append(Path(report_file))
    manifest.add_artifacts(root, paths)
    if stale:  # dropped, not listed again, and loaded by the board: unlisted it would be refused, so it goes
        for rel in set(unlisted_files(manifest, root, only=[prefix])) & stale:
            (root / rel).unlink(missing_ok=True)
    manifest.save(root)
