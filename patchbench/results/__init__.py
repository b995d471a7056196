"""Stage 3b, results: what a grid's records say, read back from the store.

``store`` holds the records (``record_check`` decides which a table can use); ``leaderboard``
aggregates them over seeds, ``epochs`` per epoch, ``phase`` over two swept fields; ``table``
renders any of those tables to the terminal, Markdown, CSV, JSON and HTML; ``curves`` gives
the learning curves that ``plot`` draws as PNG and ``report`` as a self-contained page;
``preview`` shows the inputs a model trains on. Nothing here trains: results read records.
"""
