"""Pictures and tables of a run's output folder (``tools/analyze.py``, ``bench/real_data.py``).

``analysis`` reads config.yaml, metrics.json and labels/ of a finished or running run; it is
imported by the tools, never by training.
"""
