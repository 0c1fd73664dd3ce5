"""Algorithm container images: resumable uploads, validation, storage."""
