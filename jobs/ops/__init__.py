"""Inspecting and launching the pipeline: ``nr status``, ``nr plan``, preflight, the run summary, ``nr report``, ``nr submit``."""
