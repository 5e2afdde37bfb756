"""Runs the shop dbt project and moves its results from the source to the analytics database."""

__version__ = "0.1.0"
