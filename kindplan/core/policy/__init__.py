"""NetworkPolicy: the model of the v1 API as kindplan understands it (model.py), and what is
built on it."""
