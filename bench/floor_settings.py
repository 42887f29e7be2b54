"""Settings of the stack floor (bench/floor.py): the pooler's own, with the floor's URLs."""

from pooler.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor"
