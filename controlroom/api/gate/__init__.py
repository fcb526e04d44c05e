"""What every request passes before its route: the body's type and depth, parameters, no stray bodies."""
