"""The object storage under a remote cache: one fsspec filesystem, used in batches.

Every remote operation of checkpoint goes through :class:`RemoteStorage`, which

* sends many small requests at once: fsspec's async filesystems (s3fs, gcsfs, ...) gather
  them concurrently, ``batch_size`` at a time; other filesystems get a thread pool. An
  entry never costs a round trip of its own in turn;
* streams large files between the local disk and the remote (``upload``/``download``),
  never holding them in memory;
* makes every write atomic where the filesystem does not: on object stores (S3, GCS,
  Azure) an object appears whole or not at all; on a plain filesystem (``file://``,
  ``ssh://``) a file is written under a temporary name (``.tmp-*``) and renamed into place,
  so a reader never sees half a file;
* counts its requests (:attr:`RemoteStorage.requests`), for the benchmark;
* turns every error other than "not found" into :class:`RemoteUnavailableError`.

fsspec and the filesystem's own package (s3fs, gcsfs, ...) are imported only when a remote
is used: ``pip install 'checkpoint-tool[remote]'``.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import RemoteConfigError, RemoteUnavailableError

T = TypeVar("T")

_RENAMING = frozenset({"file", "local", "sftp", "ssh", "smb", "ftp", "hdfs", "webhdfs", "arrow_hdfs"})
"""Protocols of filesystems whose writes are not atomic by themselves (rename into place)."""
_THREADS = 16
_PART = 8 << 20
_PARTS = 4
_S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60,
              "retries": {"max_attempts": 3, "mode": "standard"}}
"""botocore settings for s3://: an unreachable endpoint is reported within seconds."""


def describe(exc: BaseException) -> str:
    """An error of a remote filesystem as a short phrase."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class RemoteStorage:
    """The files of a remote cache under one URL (see the module docstring)."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise RemoteConfigError(
                f"The remote cache {url} needs fsspec (and s3fs for s3://): "
                "pip install 'checkpoint-tool[remote]'."
            ) from None
        self.url = url
        options: dict[str, Any] = {}
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        if protocol in ("s3", "s3a"):
            options["config_kwargs"] = _S3_CONFIG
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:
            raise RemoteConfigError(
                f"The remote cache {url} needs a package that is not installed: {describe(exc)}"
            ) from None
        except (ValueError, TypeError) as exc:
            raise RemoteConfigError(f"{url!r} is not a remote cache URL fsspec understands: "
                                    f"{describe(exc)}. Use s3://bucket/prefix, gs://..., "
                                    "file:///shared/dir or ssh://host/dir.") from None
        self.fs: Any = fs
        self.root = root.rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        self.renaming = not _RENAMING.isdisjoint(protocols)
        self.is_async = bool(getattr(fs, "async_impl", False))
        self.read_options: dict[str, Any] = {}
        if self.is_async:
            import inspect

            # s3fs asks for an object's size (a HEAD request) before reading it whole,
            # to read large ones in parallel ranges; manifests and small objects are small.
            if "max_concurrency" in inspect.signature(fs._cat_file).parameters:
                self.read_options["max_concurrency"] = 1
        self.transfer_options: dict[str, Any] = {}
        """Large files move in parts of ``_PART`` bytes, ``_PARTS`` at a time: with s3fs's
        defaults (50 MiB parts, 10 at once) uploading 256 MiB peaks at 576 MiB of memory."""
        if self.is_async and not self.local:
            import inspect

            for method in (fs._put_file, fs._get_file):
                parameters = inspect.signature(method).parameters
                if "chunksize" in parameters and "max_concurrency" in parameters:
                    self.transfer_options = {"chunksize": _PART, "max_concurrency": _PARTS}
        self.requests = 0
        """Requests sent so far (a listing counts one per page of 1,000)."""

    def path(self, relative: str) -> str:
        """The full path of a file of the remote cache, given relative to its root."""
        return f"{self.root}/{relative}" if self.root else relative

    # --- errors -----------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> RemoteUnavailableError:
        if isinstance(exc, RemoteUnavailableError):
            return exc
        return RemoteUnavailableError(
            f"The remote cache {self.url} cannot be reached: {describe(exc)}. Check the URL, "
            "the network and the credentials (for s3://: AWS_ACCESS_KEY_ID, AWS_PROFILE, "
            "AWS_ENDPOINT_URL_S3)."
        )

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the client library: unreachable
            raise self._unavailable(exc) from None

    def _map(self, fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(_THREADS, len(items))) as pool:
            return list(pool.map(fn, items))

    # --- reading ----------------------------------------------------------------------------

    def read_many(self, relatives: list[str]) -> dict[str, bytes | None]:
        """The contents of many files at once (``None`` for those that do not exist).

        Raises:
            RemoteUnavailableError: the remote cannot be reached (or refused a read).
        """
        if not relatives:
            return {}
        self.requests += len(relatives)
        paths = [self.path(r) for r in relatives]
        if self.local:
            results: list[Any] = self._map(_read_local, paths)
        elif self.is_async:
            results = self._call(lambda: self.fs.cat_ranges(paths, None, None, on_error="return",
                                                            **self.read_options))
        else:
            results = self._map(lambda p: _or_error(lambda: self.fs.cat_file(p)), paths)
        found: dict[str, bytes | None] = {}
        for relative, result in zip(relatives, results, strict=True):
            if isinstance(result, FileNotFoundError):
                found[relative] = None
            elif isinstance(result, BaseException):
                raise self._unavailable(result)
            else:
                found[relative] = bytes(result)
        return found

    def download(self, relative: str, local: str) -> bool:
        """Stream a remote file into ``local`` (created); False when it does not exist."""
        self.requests += 1
        path = self.path(relative)
        try:
            self._call(lambda: self.fs.get_file(path, local, **self.transfer_options))
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                os.unlink(local)
            return False
        return True

    def listing(self, prefix: str) -> dict[str, tuple[int, float]]:
        """``{relative path: (size, modification time)}`` of the files under ``prefix``."""
        path = self.path(prefix.rstrip("/"))
        self.fs.invalidate_cache(path)  # another process may have written since (s3fs caches)
        try:
            found = self._call(lambda: self.fs.find(path, detail=True))
        except FileNotFoundError:
            found = {}
        self.requests += max(1, math.ceil(len(found) / 1000))
        start = len(self.root) + 1 if self.root else 0
        out: dict[str, tuple[int, float]] = {}
        for name, info in found.items():
            if info.get("type", "file") != "file":
                continue
            name = name.lstrip("/") if not self.root.startswith("/") else name
            out[name[start:]] = (int(info.get("size") or 0), _mtime(info))
        return out

    def exists(self, relative: str) -> bool:
        self.requests += 1
        path = self.path(relative)
        self.fs.invalidate_cache(path)
        return bool(self._call(lambda: self.fs.exists(path)))

    # --- writing ----------------------------------------------------------------------------

    def write_many(self, items: dict[str, bytes]) -> None:
        """Write many small files at once, each atomically (see the module docstring)."""
        if not items:
            return
        self.requests += len(items) * (2 if self.renaming and not self.local else 1)
        if self.local:
            self._map(lambda kv: self._call(lambda: _write_local(self.path(kv[0]), kv[1])),
                      items.items())
        elif self.renaming:
            self._map(lambda kv: self._call(lambda: self._rename_write(self.path(kv[0]), kv[1])),
                      items.items())
        else:
            data = {self.path(k): v for k, v in items.items()}
            self._call(lambda: self.fs.pipe(data))

    def _rename_write(self, path: str, data: bytes) -> None:
        tmp = _tmp_name(path)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def upload(self, local: str, relative: str) -> None:
        """Stream a local file to the remote, atomically."""
        path = self.path(relative)
        self.requests += 1
        if self.local:
            self._call(lambda: _copy_local(local, path))
        elif self.renaming:
            def put() -> None:
                tmp = _tmp_name(path)
                self.fs.put_file(local, tmp)
                self.fs.mv(tmp, path)
            self._call(put)
        else:
            self._call(lambda: self.fs.put_file(local, path, **self.transfer_options))

    def delete(self, relatives: list[str]) -> None:
        """Remove files (those already gone are ignored)."""
        if not relatives:
            return
        self.requests += max(1, math.ceil(len(relatives) / 1000))
        paths = [self.path(r) for r in relatives]
        if self.local:
            for p in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
            return
        with contextlib.suppress(FileNotFoundError):
            self._call(lambda: self.fs.rm(paths))


def _mtime(info: dict[str, Any]) -> float:
    for name in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
        with contextlib.suppress(ValueError):
            from datetime import datetime

            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    return 0.0


def _or_error(fn: Callable[[], T]) -> T | BaseException:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported per file by the caller
        return exc


def _read_local(path: str) -> bytes | BaseException:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        return exc


def _tmp_name(path: str) -> str:
    head, _, tail = path.rpartition("/")
    return f"{head}/.tmp-{secrets.token_hex(6)}-{tail}" if head else f".tmp-{secrets.token_hex(6)}-{tail}"


def _write_local(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _copy_local(source: str, path: str) -> None:
    import shutil

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
