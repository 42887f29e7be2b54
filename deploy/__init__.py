"""Running the pooler in production: deploy/supervisord.conf and its launcher, `python -m deploy.serve`."""
