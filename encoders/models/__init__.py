"""Built-in encoders; each module registers its factories with :func:`encoders.register_encoder`."""
