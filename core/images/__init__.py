"""Example images: ingestion (files, zips, server-side folders), validation and re-encoding,
deduplication, the train/holdout split, readiness for training, moves/deletes, thumbnails and export.

One module per job; this package re-exports the public API, so callers keep writing
``from core import images; images.ingest_uploads(...)``:

=============  ===========================================================================
base           statuses, extensions, limits (core.settings), results, label checks, split rule
pixels         validate one image and re-encode its pixels (what is stored, and why)
staging        per-upload temporary folders; :func:`remove_stale_uploads` after a crash
ingest         batches: rows + files + promotions + audit row in one transaction each
archive        zip uploads (zip-slip, nesting, encryption, bombs refused)
scan           the one folder scanner (also the experiment's), symlinks never followed
folder         folder import, labels created through core.labels and the glossary
catalogue      counts, rows, thumbnails, samples, readiness
manage         move / delete with the training-set guards
export         ImageNet-style tree + formula-safe images.csv, and reading it back
=============  ===========================================================================
"""
from __future__ import annotations

from core.images.archive import is_zip
from core.images.base import (ARCHIVE_EXTENSIONS, EXPORT_STATUSES, HOLDOUT_RULE_MIN_IMAGES, IMAGE_EXTENSIONS,
                              OPEN_STATUSES, SUPPORTED_FORMATS, UPLOAD_EXTENSIONS, IngestResult, hash_split,
                              image_path, limits, setting, summarize, upload_caps_mb)
from core.images.catalogue import (THUMB_SIZE, NotReadyError, Readiness, count_images, get_image,
                                   holdout_samples, label_counts, list_images, readiness, require_ready,
                                   thumbnail_path)
from core.images.export import (CSV_COLUMNS, ExportResult, export_dataset, images_csv, read_images_csv,
                                safe_folder_name)
from core.images.folder import FolderImport, find_label_for_folder, import_folder
from core.images.ingest import ensure_min_holdout, holdout_target, ingest_uploads
from core.images.manage import delete_images, move_images
from core.images.pixels import JPEG_QUALITY, Normalised, check_image, normalise_image
from core.images.scan import SPLIT_FOLDERS, FolderScan, read_inside, scan_image_folder
from core.images.staging import remove_stale_uploads
from core.settings import IMAGE_DEFAULTS as DEFAULTS

__all__ = [
    "ARCHIVE_EXTENSIONS", "CSV_COLUMNS", "DEFAULTS", "EXPORT_STATUSES", "HOLDOUT_RULE_MIN_IMAGES",
    "IMAGE_EXTENSIONS", "JPEG_QUALITY", "OPEN_STATUSES", "SPLIT_FOLDERS", "SUPPORTED_FORMATS", "THUMB_SIZE",
    "UPLOAD_EXTENSIONS", "ExportResult", "FolderImport", "FolderScan", "IngestResult", "Normalised",
    "NotReadyError", "Readiness", "check_image", "count_images", "delete_images", "ensure_min_holdout", "export_dataset",
    "find_label_for_folder", "get_image", "hash_split", "holdout_target", "holdout_samples", "image_path", "images_csv",
    "import_folder", "ingest_uploads", "is_zip", "label_counts", "limits", "list_images", "move_images",
    "normalise_image", "read_images_csv", "read_inside", "readiness", "remove_stale_uploads",
    "require_ready", "safe_folder_name", "scan_image_folder", "setting", "summarize", "thumbnail_path",
    "upload_caps_mb",
]
