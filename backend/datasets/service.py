from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from backend import access
from backend.config import settings
from backend.datasets import importers
from backend.datasets import repository as repo
from backend.datasets.schemas import DatasetIn, ImportIn
from backend.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from backend.models import Case, Challenge, Dataset, DatasetVersion, User


def _require_manager(session: Session, user: User, dataset: Dataset) -> None:
    if user.is_admin:
        return
    if dataset.challenge_id is None or not access.is_organizer(session, user, dataset.challenge_id):
        raise ForbiddenError(f"Only organisers of the challenge owning '{dataset.slug}' may.")


def create(session: Session, user: User, data: DatasetIn) -> Dataset:
    challenge: Challenge | None = None
    if data.challenge is not None:
        challenge = access.challenge_by_slug(session, data.challenge, user)
        access.require_organizer(session, user, challenge)
    elif not user.is_admin:
        raise ForbiddenError("Give the challenge this dataset belongs to (you organise it).")
    if repo.by_slug(session, data.slug) is not None:
        raise ConflictError(f"A dataset '{data.slug}' already exists; pick another slug.")
    dataset = Dataset(
        slug=data.slug,
        title=data.title,
        description=data.description,
        challenge_id=challenge.id if challenge else None,
        created_by_id=user.id,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get(session: Session, user: User, slug: str) -> Dataset:
    dataset = repo.by_slug(session, slug)
    if dataset is None:
        raise NotFoundError(f"There is no dataset '{slug}'.")
    _require_manager(session, user, dataset)
    return dataset


def list_visible(session: Session, user: User) -> Sequence[Dataset]:
    return repo.visible_to(session, user)


def _check_import_path(user: User, raw: str | None) -> Path:
    if not raw:
        raise BadRequestError("Give `path`: the SynthRAD folder on the server.")
    path = Path(raw).resolve()
    if user.is_admin:
        return path
    roots = [r.resolve() for r in settings.dataset_import_roots]
    if not any(path.is_relative_to(r) for r in roots):
        raise ForbiddenError(
            "Organisers may import only from the server's import folders "
            f"({', '.join(map(str, roots)) or 'none configured'}); ask an administrator."
        )
    return path


def import_version(session: Session, user: User, dataset: Dataset, data: ImportIn) -> (
    DatasetVersion
):
    _require_manager(session, user, dataset)
    repo.lock_dataset(session, dataset.id)  # serialise version numbers per dataset
    number = repo.next_version(session, dataset.id)
    with tempfile.TemporaryDirectory(prefix="syntharena-import-") as tmp:
        if data.source == "synthrad":
            root = _check_import_path(user, data.path)
            source = f"synthrad:{root}"
        else:
            root = Path(tmp) / "phantoms"
            _generate_phantoms(root, data)
            source = (f"phantom:{data.anatomy}:cases={data.cases}:seed={data.seed}"
                      f":size={data.size}" + (":plans" if data.plans else ""))
        found = importers.find_cases(root)
        version = DatasetVersion(
            dataset_id=dataset.id, version=number, source=source, note=data.note,
            case_count=len(found),
        )
        session.add(version)
        session.flush()
        rel = Path(dataset.slug) / f"v{number}"
        written: list[Path] = []
        try:
            for case in found:
                session.add(_store_case(version.id, rel, case, written))
            session.flush()
        except BaseException:
            for path in written:
                shutil.rmtree(path, ignore_errors=True)
            raise
    return version


def _store_case(
    version_id: int, rel: Path, case: importers.FoundCase, written: list[Path]
) -> Case:
    in_dir = settings.inputs_dir / rel / case.name
    gt_dir = settings.groundtruth_dir / rel / case.name
    # Only the service account (backend + worker) may read ground truth.
    settings.groundtruth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written += [in_dir, gt_dir]
    modality_dir = case.modality.value
    image = in_dir / f"{modality_dir}.mha"
    mask = in_dir / "mask.mha"
    importers.write_as_mha(case.input_image, image)
    importers.write_as_mha(case.mask, mask)
    (in_dir / "region.json").write_text(json.dumps(case.region))
    ct = importers.copy_ground_truth(case.ct, gt_dir, "ct")
    labels = importers.copy_ground_truth(case.labels, gt_dir, "labels") if case.labels else None
    plan = (importers.copy_ground_truth(case.plan, gt_dir, _plain_stem(case.plan))
            if case.plan else None)
    for extra in case.plan_extras:  # other plans and the structure maps the plans name
        importers.copy_ground_truth(extra, gt_dir, _plain_stem(extra))

    def r(p: Path | None) -> str | None:
        return str(p.relative_to(settings.data_dir)) if p is not None else None

    return Case(
        dataset_version_id=version_id,
        name=case.name,
        modality=case.modality,
        region=case.region,
        input_image_path=str(r(image)),
        mask_path=str(r(mask)),
        ground_truth_path=str(r(ct)),
        labels_path=r(labels),
        plan_path=r(plan),
    )


def _plain_stem(path: Path) -> str:
    """``plan_photon.json`` -> ``plan_photon``; ``structures.nii.gz`` -> ``structures``."""
    return path.name.split(".", 1)[0]


def _generate_phantoms(out_dir: Path, data: ImportIn) -> None:
    try:
        from evaluator.phantoms import generate_dataset
    except ImportError as exc:
        raise BadRequestError(
            "The phantom generator (evaluator.phantoms) is not installed on this server."
        ) from exc
    out_dir.mkdir(parents=True)
    generate_dataset(out_dir, data.anatomy, data.cases, data.seed, data.size, plans=data.plans)


def cases_of(session: Session, user: User, dataset: Dataset, number: int) -> Sequence[Case]:
    _require_manager(session, user, dataset)
    version = repo.version(session, dataset.id, number)
    if version is None:
        raise NotFoundError(f"Dataset '{dataset.slug}' has no version {number}.")
    return repo.cases(session, version.id)


def versions_of(session: Session, dataset_id: int) -> Sequence[DatasetVersion]:
    return repo.versions(session, dataset_id)
