"""The command-line client for CI and terminals: submit jobs, watch runs. It talks HTTP only."""
