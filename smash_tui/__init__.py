"""smash-tui: the terminal UI and CLI over a SMASH results file."""
