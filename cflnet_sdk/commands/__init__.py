"""One module per ``cflnet`` sub-command; each imports its heavy libraries lazily."""
