"""Fixtures for worker tests: real Docker engine, example images built by the CI build script."""

from __future__ import annotations

import pytest

from tests.worker.helpers import ensure_example
from worker import sandbox


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not sandbox.ping():
        pytest.fail("No Docker engine: run `source scripts/services.sh; start_docker`.")


@pytest.fixture(scope="session")
def static_images(docker_engine: None) -> dict[str, str]:
    names = ["static-c", "fail-crash", "fail-sleep", "fail-oom", "fail-wrong-geometry",
             "fail-no-output", "fail-nan"]
    return {n: ensure_example(n) for n in names}


@pytest.fixture(scope="session")
def python_image(docker_engine: None) -> str:
    return ensure_example("python")



@pytest.fixture(scope="session")
def pipeline_env(tmp_path_factory: pytest.TempPathFactory, static_images: dict[str, str]):
    """Dedicated PostgreSQL + Redis databases and data dir for pipeline tests (restored after)."""
    from backend import db, tasks_client
    from backend.config import settings
    from tests.worker import harness
    from worker.celery_app import app

    saved = (settings.database_url, settings.redis_url, settings.data_dir,
             settings.reaper_grace_s, app.conf.broker_url)
    env = harness.setup("syntharena_worker_test", tmp_path_factory.mktemp("data"), redis_db=7)
    yield env
    (settings.database_url, settings.redis_url, settings.data_dir,
     settings.reaper_grace_s, _) = saved
    app.conf.update(broker_url=saved[4])
    db.get_engine.cache_clear()
    db.get_sessionmaker.cache_clear()
    from backend import storage

    storage.get_storage.cache_clear()
    tasks_client.configure(saved[1])


@pytest.fixture
def clean_pipeline(pipeline_env):
    from tests.worker import harness

    harness.truncate_all()
    harness.flush_redis(pipeline_env)
    yield pipeline_env
    # Only this suite's containers: other suites may be running on the same engine.
    for labels in sandbox.running_labels():
        worker = labels.get(sandbox.LABEL_WORKER, "")
        if worker == "pytest" or worker.startswith(("e2e@", "victim@")):
            sandbox.remove_containers(**{sandbox.LABEL_WORKER: worker})
