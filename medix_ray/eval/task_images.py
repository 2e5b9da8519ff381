"""A task's images: one image cell (bytes, a path, an http(s) URL) read, fetched if need be, and checked.

    base = image_base(spec, task_dir, image_root)      # unpacks the task's image archive there if needed
    image, where, error = read_image(spec, row[spec.image], base)

Relative paths stay inside the task's image folder (medix_ray/data/paths.py). A URL, or a relative path of a
task with an `image_url`, is fetched to its place under the image folder when missing; the PhysioNet
credentials (`CREDENTIAL_ENV`) go only to the `image_url` host, and only when it asks. A problem of one image
is returned as that item's error, never raised.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from medix_ray.data.paths import PathEscapeError, confine
from medix_ray.eval.task_spec import TaskDataError, TaskSpec

# MIMIC-CXR-JPG is credentialed. The user name and password are read from the environment only (never from a
# config or a command line), under our spelling or the reference's (eval/README.md: PHYSIONET_UNAME/PWD); the
# first one set wins.
CREDENTIAL_ENV = {
    "username": ("PHYSIONET_USERNAME", "PHYSIONET_UNAME"),
    "password": ("PHYSIONET_PASSWORD", "PHYSIONET_PWD"),
}


def image_base(spec: TaskSpec, task_dir: Path | None, image_root: str | Path | None) -> Path:
    """Returns the folder relative image paths resolve against; unpacks the task's image archive there if needed."""
    if image_root:
        return Path(image_root)
    from medix_ray.models import medix_home

    root = task_dir if task_dir is not None else medix_home() / "eval" / spec.name
    base = root / spec.image_dir
    if spec.image_archive and not base.exists():
        archive = root / spec.image_archive
        if not archive.is_file() and task_dir is None:
            from huggingface_hub import hf_hub_download

            try:
                archive = Path(
                    hf_hub_download(spec.hub_id, spec.image_archive, repo_type="dataset", revision=spec.revision)
                )
            except Exception as exc:
                raise TaskDataError(
                    f"task {spec.name!r}: cannot fetch {spec.image_archive} from {spec.hub_id}: {exc}"
                ) from exc
        if archive.is_file():
            root.mkdir(parents=True, exist_ok=True)
            unpacked = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)
            # The archive holds either the image_dir folder itself (imgs/...) or its contents.
            inner = unpacked / spec.image_dir if spec.image_dir and (unpacked / spec.image_dir).is_dir() else unpacked
            inner.rename(base)
            shutil.rmtree(unpacked, ignore_errors=True)
    return base


def _credentials() -> tuple[str, str]:
    """Returns (user, password) from the environment, each from the first of its CREDENTIAL_ENV names set."""
    first_set = (next((os.environ[n] for n in names if os.environ.get(n)), "") for names in CREDENTIAL_ENV.values())
    user, password = first_set
    return user, password


def _credential_names() -> str:
    spellings = list(zip(*CREDENTIAL_ENV.values(), strict=True))
    return " (or ".join(" and ".join(pair) for pair in spellings) + ")" * (len(spellings) - 1)


def _site(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def _url_cache_path(spec: TaskSpec, url: str) -> PurePosixPath | None:
    """Returns where an image URL is kept under the image root: its path below `image_url` (MIMIC's files/pXX/...),
    or <host>/<path> for a URL elsewhere; None when the URL names no safe relative file path."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    base = urlsplit(spec.image_url) if spec.image_url else None
    if base is not None and parts.netloc == base.netloc and path.startswith(unquote(base.path).rstrip("/") + "/"):
        relative = PurePosixPath(path[len(unquote(base.path).rstrip("/")) + 1 :])
    else:
        relative = PurePosixPath(parts.netloc, path.lstrip("/"))
    if not relative.name or any(p in ("..", "") for p in relative.parts) or relative.is_absolute():
        return None
    return relative


def _fetch(spec: TaskSpec, url: str, dest: Path) -> str:
    """Returns "" once the image at `url` is saved at dest, else why not; the message never holds the password.

    The PhysioNet credentials are sent only to the host of the task's `image_url`, and only after it asks for them
    (HTTP basic auth); another host gets no credentials. Nothing but the image bytes is written.
    """
    handlers: list[urllib.request.BaseHandler] = []
    password = ""
    if spec.image_url and _site(url) == _site(spec.image_url):
        user, password = _credentials()
        if not user or not password:
            return f"image file missing: {dest} (set {_credential_names()} to fetch it from {url})"
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, _site(spec.image_url), user, password)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=60) as response:
            data = response.read()
    except Exception as exc:  # HTTP status, DNS, timeout: the item is recorded as an input error
        text = str(exc).replace(password, "***") if password else str(exc)
        return f"image file missing: {dest} (fetching {url} failed: {text})"
    if _checked(data, url)[2]:  # a login page served with status 200 is not kept as the image
        return f"image file missing: {dest} (fetching {url} returned {len(data)} bytes that are not an image)"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.replace(dest)
    return ""


def _checked(data: bytes, path: str) -> tuple[bytes | None, str, str]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:
        return None, path, f"image decode error: {path or '<embedded bytes>'}: {exc}"
    return data, path, ""


def read_image(spec: TaskSpec, value: Any, base: Path) -> tuple[bytes | None, str, str]:
    """Returns (encoded image or None, where it came from, error or "") of one image cell.

    A relative path resolves against `base` (fetched from below `image_url` if missing and the task has one); an
    http(s) URL is read from its place under `base` (see `_url_cache_path`), fetched there first if missing.
    """
    if isinstance(value, Mapping):  # HF Image {bytes, path}
        if value.get("bytes") is not None:
            return _checked(bytes(value["bytes"]), str(value.get("path") or ""))
        value = value.get("path")
    if value is None or value == "":
        return None, "", f"no image in column {spec.image!r}"
    if isinstance(value, bytes | bytearray):
        return _checked(bytes(value), "")
    if hasattr(value, "save"):  # a decoded PIL image
        buf = io.BytesIO()
        value.save(buf, format=value.format or "PNG")
        return buf.getvalue(), "", ""
    if not isinstance(value, str | os.PathLike):
        kind = type(value).__name__
        return None, "", f"column {spec.image!r} holds {kind}; expected an image, bytes, a path or a URL"
    url = ""
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):  # MIMIC: a PhysioNet URL
        url = value
        relative = _url_cache_path(spec, url)
        if relative is None:
            return None, url, f"image URL {url} in column {spec.image!r} names no file path"
        path = base / relative
    else:
        relative = Path(value)
        try:  # a row's relative path stays inside the task's image folder (data/paths.py)
            path = relative if relative.is_absolute() else Path(confine(base, str(value)))
        except PathEscapeError as exc:
            return None, str(value), str(exc)
        if spec.image_url and not relative.is_absolute():
            url = spec.image_url.rstrip("/") + "/" + relative.as_posix()
    if not path.is_file() and url:
        if error := _fetch(spec, url, path):
            return None, str(path), error
    try:
        data = path.read_bytes()
    except OSError:
        return None, str(path), f"image file missing: {path}"
    return _checked(data, str(path))
