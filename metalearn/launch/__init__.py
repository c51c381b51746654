"""Cluster jobs: a grid as prepare -> shards -> report through submitit, and the status of a run folder."""
