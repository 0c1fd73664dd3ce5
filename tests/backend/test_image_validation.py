from __future__ import annotations

import bz2
import tarfile
from pathlib import Path

import pytest

from backend.images.validation import ImageInvalidError, validate_tarball
from tests.backend.tarballs import make_image_tar

LIMIT = 10**9


def _check(path: Path) -> str:
    with pytest.raises(ImageInvalidError) as exc:
        validate_tarball(path, max_uncompressed_bytes=LIMIT)
    return exc.value.message


@pytest.mark.parametrize("compression", ["", "gz", "xz"])
def test_valid_image_in_every_compression(tmp_path: Path, compression: str) -> None:
    report = validate_tarball(make_image_tar(tmp_path / "i.tar", compression=compression),
                              max_uncompressed_bytes=LIMIT)
    assert report.docker_image_id.startswith("sha256:") and report.user == "1000"
    assert report.compression == {"": "none", "gz": "gzip", "xz": "xz"}[compression]
    assert report.repo_tags == ["algo:1"]


@pytest.mark.parametrize("user", ["", "root", "0", "root:root", "0:0"])
def test_root_user_rejected_with_fix(tmp_path: Path, user: str) -> None:
    message = _check(make_image_tar(tmp_path / "i.tar", user=user))
    assert "root" in message and "USER algorithm" in message


def test_architecture_os_and_image_count(tmp_path: Path) -> None:
    assert "--platform linux/amd64" in _check(make_image_tar(tmp_path / "a.tar", arch="arm64"))
    assert "linux" in _check(make_image_tar(tmp_path / "b.tar", os_name="windows"))
    assert "exactly one" in _check(make_image_tar(tmp_path / "c.tar", images=2))


def test_inconsistent_archives(tmp_path: Path) -> None:
    assert "digest" in _check(make_image_tar(tmp_path / "a.tar", bad_digest=True))
    assert "missing" in _check(make_image_tar(tmp_path / "b.tar", drop_layer=True))


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../evil"])
def test_escaping_member_names_rejected(tmp_path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 1
    assert "escapes" in _check(make_image_tar(tmp_path / "i.tar", extra=[info])) or \
        "unsafe" in _check(make_image_tar(tmp_path / "j.tar", extra=[info]))


def test_escaping_links_and_special_files_rejected(tmp_path: Path) -> None:
    link = tarfile.TarInfo("x/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../etc/shadow"
    assert "outside" in _check(make_image_tar(tmp_path / "a.tar", extra=[link]))
    fifo = tarfile.TarInfo("fifo")
    fifo.type = tarfile.FIFOTYPE
    assert "special" in _check(make_image_tar(tmp_path / "b.tar", extra=[fifo]))


def test_not_a_tarball_and_bzip2(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    assert "not a tar archive" in _check(tmp_path / "junk")
    (tmp_path / "b.tar.bz2").write_bytes(bz2.compress(b"x" * 1000))
    assert "bzip2" in _check(tmp_path / "b.tar.bz2")
    plain = make_image_tar(tmp_path / "t.tar")
    (tmp_path / "trunc.tar").write_bytes(plain.read_bytes()[:1500])
    _check(tmp_path / "trunc.tar")


def test_uncompressed_size_limit(tmp_path: Path) -> None:
    path = make_image_tar(tmp_path / "i.tar", compression="gz", payload=b"0" * 200_000)
    with pytest.raises(ImageInvalidError, match="larger than 100 kB unpacked"):
        validate_tarball(path, max_uncompressed_bytes=100_000)


def test_sizes_read_as_people_write_them() -> None:
    from backend.images.validation import human_size

    assert human_size(3_500_000_000) == "3.50 GB"
    assert human_size(64_000_000) == "64 MB"
    assert human_size(512) == "512 bytes"
