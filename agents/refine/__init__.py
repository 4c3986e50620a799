"""Refine one image by painting on it: a local web page for human-guided PXPO (``python -m agents.refine``).

``workspace`` owns what apply does (painting -> per-pixel reward -> K PXPO updates -> re-render),
``server`` the workspaces and the job queue,
``app`` the HTTP API, ``static/`` the page (no CDN: it works offline).
"""
