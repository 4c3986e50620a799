"""One-question studies: each script measures one thing the docs report (``python -m benchmarks.studies.NAME``)."""
