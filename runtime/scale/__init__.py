"""Scale-out room: `infer --ray`, the same records computed on a Ray cluster with Ray Data.

Above the core runtime (the core never imports this); needs the `ray` extra.
"""
