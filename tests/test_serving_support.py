"""The former name of serving_support.py, for a module that still imports it (no tests here); remove once every
importer names serving_support."""

from serving_support import *  # noqa: F401,F403
