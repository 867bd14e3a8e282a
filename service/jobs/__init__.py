"""Jobs: state machine, runner, in-process executor, scheduler, task functions."""
