"""Real services for the tests, started in temporary directories on free loopback ports."""
