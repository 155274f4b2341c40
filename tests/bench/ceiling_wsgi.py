"""Gunicorn's entry for the ceiling app (``tests.bench.ceiling_wsgi:app``), like each service's ``wsgi.py``."""

import os

from tests.bench.ceiling_app import create_app

app = create_app(os.environ["LABINOV_BENCH_CEILING_DATABASE_URL"])
