"""Taking a model to the line: model bundles (bundle.py), API tokens (tokens.py). The torch-free reader
of bundles is core/runtime; the REST service is core/serve.py."""
