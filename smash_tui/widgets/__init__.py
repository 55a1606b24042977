"""The search screen's widgets: status line, loss plot, leaderboard (and its data model), diagram, log."""
