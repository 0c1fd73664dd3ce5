"""Fixtures for worker tests: real Docker engine, example images built by the CI build script."""

from __future__ import annotations

import shutil

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
    from tests.worker import harness

    with harness.settings_restored():
        yield harness.setup("syntharena_worker_test", tmp_path_factory.mktemp("data"),
                            redis_db=7)


@pytest.fixture
def clean_pipeline(pipeline_env):
    from tests.worker import harness

    harness.truncate_all()  # ids start again at 1 ...
    harness.flush_redis(pipeline_env)
    # ... so an earlier test's predictions/<submission id>/ must not be found by this one.
    shutil.rmtree(pipeline_env.data_dir / "predictions", ignore_errors=True)
    yield pipeline_env
    # Only this suite's containers: other suites may be running on the same engine.
    for labels in sandbox.running_labels():
        worker = labels.get(sandbox.LABEL_WORKER, "")
        if worker == "pytest" or worker.startswith(("e2e@", "victim@")):
            sandbox.remove_containers(**{sandbox.LABEL_WORKER: worker})
