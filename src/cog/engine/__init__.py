"""Running jobs: templates, the step runner, executors, recovery and live events."""
