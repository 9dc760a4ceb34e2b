"""ESAPSpawner and what it builds: user options, pod objects, the data side, spawn records."""
