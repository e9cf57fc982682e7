"""Where briefs come from: a folder of YAML files (an S3 prefix later)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.brief_schema import Brief, BriefError, brief_files, parse_brief, read_brief_bytes
from resources.settings import briefs_dir


@dataclass(frozen=True)
class BriefFile:
    path: Path
    sha256: str
    brief: Brief | None
    error: BriefError | None


# Bare on purpose (hence the ignore): ConfigurableResource[X] would make pydantic build a new base class at run time.
class BriefSource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The briefs folder; `folder` defaults to `$STUDIO_BRIEFS_DIR` or `briefs/`."""

    folder: str = ""

    def folder_path(self) -> Path:
        return Path(self.folder).resolve() if self.folder else briefs_dir()

    def scan(self) -> list[BriefFile]:
        """Every brief file with its content hash, parsed or with the reason it is invalid."""
        scanned = []
        for path in brief_files(self.folder_path()):
            try:
                raw = read_brief_bytes(path)
            except BriefError as exc:
                scanned.append(BriefFile(path, "", None, exc))
                continue
            digest = hashlib.sha256(raw).hexdigest()
            try:
                scanned.append(BriefFile(path, digest, parse_brief(raw, str(path)), None))
            except BriefError as exc:
                scanned.append(BriefFile(path, digest, None, exc))
            except Exception as exc:  # noqa: BLE001 - one hostile file must never stop the scan
                problem = f"(brief): could not be validated: {type(exc).__name__}: {str(exc)[:200]}"
                scanned.append(BriefFile(path, digest, None, BriefError(str(path), [problem])))
        return scanned

    def find(self, campaign_id: str) -> BriefFile:
        """The one valid brief that declares `campaign_id`."""
        matches = [f for f in self.scan() if f.brief is not None and f.brief.campaign_id == campaign_id]
        if not matches:
            raise LookupError(f"no valid brief in {self.folder_path()} declares campaign_id {campaign_id!r}")
        if len(matches) > 1:
            names = ", ".join(str(f.path) for f in matches)
            raise LookupError(f"campaign_id {campaign_id!r} is declared by several briefs: {names}")
        return matches[0]
