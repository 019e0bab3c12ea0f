"""The inference service: ``python -m core.serve --run R`` (or ``--bundle B.zip``), FastAPI on uvicorn.

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /v1/predict`` — one or many images, as ``multipart/form-data`` (any number of file fields, up
  to the batch limit) or as the raw request body (one image). Needs a token with scope ``predict``.
* ``GET /v1/models`` — the model being served (version, classes, threshold). Scope ``predict`` or ``read``.
* ``GET /health`` — liveness and the served model version; no token.

It serves one bundle file, or the latest task of a run from the data home (``bundles/<run>/<task>.zip``,
written by the worker after every task) and then follows it: a poller opens a newer bundle completely
before swapping it in with one reference assignment, and each request holds the bundle it started with,
so a reload drops and mixes no request. API tokens come from the data home's database (core/deploy/
tokens.py); every refusal and every bad input is a JSON body ``{"error": {"code", "message"}}``.
Limits: request bytes, pixels per image, images per request.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.deploy.tokens import TokenRefused, check_token
from core.runtime.bundle import BadImage, Bundle
from core.store import Store

log = logging.getLogger("core.serve")


@dataclass
class Limits:
    max_request_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch: int = 32


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class ModelHolder:
    """The bundle being served; follows the run's newest bundle when ``run_id`` is given."""

    def __init__(self, store: Store | None = None, run_id: int | None = None, bundle_path: str | Path | None = None,
                 poll_s: float = 2.0):
        if (run_id is None) == (bundle_path is None):
            raise ValueError("serve either a bundle or a run")
        self.store, self.run_id, self.poll_s = store, run_id, poll_s
        self.bundle_path = Path(bundle_path) if bundle_path else None
        self.current: Bundle | None = None
        self.key = None
        self.reloads = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    def _source(self) -> Path | None:
        if self.bundle_path is not None:
            return self.bundle_path
        from core.deploy.bundle import latest_bundle

        return latest_bundle(self.store, self.run_id)

    def refresh(self) -> bool:
        """Swap in a newer bundle when there is one; True when it did."""
        path = self._source()
        if path is None:
            return False
        try:
            st = path.stat()
        except OSError:
            return False
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key == self.key:
            return False
        try:
            bundle = Bundle.open(path)      # fully loaded before anyone sees it
        except Exception as exc:  # noqa: BLE001 - keep serving the old model, say why
            self.last_error = f"{path}: {exc}"
            log.error("could not load %s: %s", path, exc)
            self.key = key
            return False
        first = self.current is None
        self.current, self.key = bundle, key   # one assignment: requests see the old or the new, whole
        self.reloads += 0 if first else 1
        self.last_error = None
        log.info("serving %s", bundle.version)
        return True

    def start(self) -> None:
        if self.run_id is None and self.bundle_path is None:
            return

        def loop():
            while not self._stop.wait(self.poll_s):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001
                    log.exception("reload check failed")

        self._thread = threading.Thread(target=loop, name="bundle-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def _error(status: int, code: str, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "request_too_large", f"request of {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "request_too_large", f"request over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body    # so request.form() parses what was read (Starlette reads _body when set)
    return body


def _predict(bundle: Bundle, images: list[tuple[str, bytes]], limits: Limits, k: int,
             store: Store | None = None) -> list[dict]:
    import hashlib

    import numpy as np

    pixels = []
    for i, (name, data) in enumerate(images):
        if not data:
            raise ApiError(422, "bad_image", f"image {i} ({name}) is empty", index=i)
        try:
            pixels.append(bundle.decode(data, limits.max_pixels))
        except BadImage as exc:
            raise ApiError(422, "bad_image", f"image {i} ({name}): {exc}", index=i) from None
    scores, fam, _ = bundle.run(np.stack(pixels))
    preds = bundle.decide(scores, fam, k)
    if store is not None:
        try:
            from core.deploy.predictions import record

            record(store, bundle.manifest, "service", preds, [hashlib.sha256(d).hexdigest() for _, d in images])
        except Exception:  # noqa: BLE001 - a full disk must not stop the line getting answers
            log.exception("could not record predictions")
    out = []
    for (name, _), pred in zip(images, preds):
        d = pred.as_dict()
        for t in d["top"]:
            t["class"] = bundle.classes[t["index"]]["name"]
            t["label_id"] = bundle.classes[t["index"]]["id"]
        out.append({"file": name, **d})
    return out


def create_app(holder: ModelHolder, store: Store, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(
        title="sgcl-studio inference service", version="1",
        description=("Classifies images with a model bundle exported by sgcl-studio. Send `Authorization: Bearer "
                     "<token>` (tokens are made on the Admin page). Errors are `{\"error\": {\"code\", \"message\"}}`. "
                     f"Limits: {limits.max_request_bytes} bytes per request, {limits.max_pixels} pixels per image, "
                     f"{limits.max_batch} images per request."))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(TokenRefused)
    async def _refused(request: Request, exc: TokenRefused):
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, "invalid_request", "; ".join(str(e.get("msg")) for e in exc.errors()))

    def _model() -> Bundle:
        if holder.current is None:
            raise ApiError(503, "no_model", "no model bundle to serve yet" +
                           (f" ({holder.last_error})" if holder.last_error else ""))
        return holder.current

    @app.get("/health", summary="Liveness and the served model")
    def health():
        bundle = holder.current
        return {"status": "ok" if bundle is not None else "no_model",
                "model": bundle.version if bundle else None, "reloads": holder.reloads}

    @app.get("/v1/models", summary="The model being served")
    async def models(authorization: str | None = Header(default=None)):
        await run_in_threadpool(check_token, store, authorization, "models")
        bundle = _model()
        return {"models": [dict(bundle.describe(), reloads=holder.reloads)]}

    body_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.post("/v1/predict", summary="Classify one or many images", openapi_extra=body_doc)
    async def predict(request: Request, authorization: str | None = Header(default=None), k: int = 3):
        """One prediction per image, in order: `class` (empty when unknown), `best_class`, `score`
        (softmax probability), `familiarity`, `unknown`, `top` (k best), and the model version."""
        await run_in_threadpool(check_token, store, authorization, "predict")
        bundle = _model()           # this request keeps this bundle even if a reload happens meanwhile
        body = await _read_body(request, limits.max_request_bytes)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=limits.max_batch + 1, max_fields=limits.max_batch + 16)
            except Exception as exc:  # noqa: BLE001 - malformed multipart or over max_files
                raise ApiError(400, "bad_multipart", f"could not read the multipart body: {exc}") from None
            images = [(f.filename or key, await f.read()) for key, f in form.multi_items() if isinstance(f, UploadFile)]
        else:
            images = [("body", body)] if body else []
        if not images:
            raise ApiError(400, "no_image", "send an image as the request body or as multipart file fields")
        if len(images) > limits.max_batch:
            raise ApiError(413, "batch_too_large", f"{len(images)} images; the limit is {limits.max_batch} per request")
        k = max(1, min(int(k), len(bundle.classes)))
        preds = await run_in_threadpool(_predict, bundle, images, limits, k, store)
        return {"model": bundle.version, "predictions": preds}

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m core.serve", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=int, help="serve the latest task of this run and follow new tasks")
    source.add_argument("--bundle", type=Path, help="serve this bundle zip")
    parser.add_argument("--home", help="data home (tokens, bundles; default $SGCL_HOME or ./sgcl-data)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between checks for a newer bundle")
    parser.add_argument("--max-batch", type=int, default=Limits.max_batch)
    parser.add_argument("--max-request-mb", type=float, default=Limits.max_request_bytes / 2**20)
    parser.add_argument("--max-pixels", type=int, default=Limits.max_pixels)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = Store(args.home) if args.home else Store()
    holder = ModelHolder(store, run_id=args.run, bundle_path=args.bundle, poll_s=args.poll)
    if holder.current is None:
        print(f"note: no bundle yet ({holder.last_error or 'none exported for this run'}); waiting for one",
              file=sys.stderr)
    holder.start()
    limits = Limits(int(args.max_request_mb * 2**20), args.max_pixels, args.max_batch)
    try:
        uvicorn.run(create_app(holder, store, limits), host=args.host, port=args.port, log_level="warning")
    finally:
        holder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
