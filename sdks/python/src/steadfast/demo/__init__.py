"""Demonstrations the ``steadfast`` binary runs with Python workers
(``steadfast demo claims --worker python``)."""
