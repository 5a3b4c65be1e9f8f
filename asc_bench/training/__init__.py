"""Training the seeds' methods: one loop for every recipe (DDP under torchrun, exact resume), config,
data stream, optimiser, checkpoints, metrics log."""
