"""The training runtime under the orchestration: the Lightning Trainer and its strategies (DDP, FSDP),
callbacks, checkpoint files, preemption, progress, loggers and the multirun job launcher."""
