"""The UI's screens: the runs list, one run's search, the help and the small dialogs."""
