"""WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Each gunicorn worker imports this module after the fork (the config never
preloads it), so the models are loaded in the workers and never in the master.
"""

from app import create_app

app = create_app()
