"""System tests: the browser, faults, fuzzing and security (a real server, real processes)."""
