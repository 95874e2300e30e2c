"""Serving room: the pipeline on Triton Inference Server (PyTriton), its lifecycle, client and load test.

Above the core runtime (the core never imports this); needs the `serve` extra.
"""
